"""Reference p-values for declab's exact Wilcoxon signed-rank test under ties and zeros.

SciPy's `wilcoxon(d, zero_method="wilcox", method=PermutationMethod(n_resamples=inf))`
enumerates every sign pattern of the non-zero differences over their observed midranks: the
exact conditional null distribution. Differences are small integers, so ties and zeros are
common. Run once (never in CI) into tests/fixtures/stats/wilcoxon_ties.json:
  python3 -m venv /tmp/scipy-venv && /tmp/scipy-venv/bin/pip install scipy
  /tmp/scipy-venv/bin/python scripts/reference/wilcoxon_ties.py > tests/fixtures/stats/wilcoxon_ties.json
"""
import json

import numpy as np
import scipy
from scipy import stats

rng = np.random.default_rng(20261130)
cases = [[1, 1, 1, 1], [1, 1, 1, 1, 1], [1] * 6, [1, 2, 2, 3, -1, 4], [0, 1, 1, 2, -2, 3, 3, 3],
         [0.5, 0.5, -0.5, 0.25, 0.25, 0.25, 1.0], [2, -2, 2, -2, 2]]
for n in list(range(3, 19)) + [20, 20]:
    lo, hi = (-3, 4) if n % 2 else (-1, 5)
    cases.append([int(x) for x in rng.integers(lo, hi, size=n)])
out = []
for d in cases:
    nz = [x for x in d if x != 0]
    if not nz:
        continue
    r = stats.wilcoxon(d, zero_method="wilcox",
                       method=stats.PermutationMethod(n_resamples=np.inf))
    out.append({"d": d, "p": float(r.pvalue)})
ref = (f"scipy {scipy.__version__} stats.wilcoxon(zero_method='wilcox', "
       "method=PermutationMethod(n_resamples=inf)): exact conditional p")
print("{")
print(f'"reference": {json.dumps(ref)},')
print('"cases": [')
print(",\n".join(json.dumps(c) for c in out))
print("]")
print("}")
