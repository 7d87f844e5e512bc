"""Turn llama.cpp's full logit rows (llama-logits' .f32 dumps) into declab's reference fixture.

Per position, in float64 from the full row: the log-sum-exp, the entropy (nats), and the
smallest set of most probable tokens holding at least MASS of the probability (at least KMIN,
at most KMAX tokens) with their log-probabilities; the mass left outside that set is the tail.
From this declab computes, exactly: the entropy difference and the top-1 agreement; and the
KL(llama.cpp || declab) of the two distributions coarsened to (head tokens, one tail bucket),
which is a lower bound of the full KL (data-processing inequality) that the tail's size bounds
from above (see src/reference.rs).

With a second run of llama.cpp on the same ids (SELF_WORKDIR: one token per batch instead of
the whole sequence in one), it also records llama.cpp's agreement with itself, computed both
exactly (full rows) and the way declab's check computes it (the first run's head): the floor
below which no other implementation of the same quantised model can be expected to go.
Usage (from scripts/logit-reference.sh):
  python compact.py SEQUENCES.json WORKDIR MODEL.gguf OUT.json.gz [SELF_WORKDIR]
"""
import gzip
import hashlib
import json
import sys

import numpy as np

MASS = 0.999
KMIN = 16
KMAX = 256


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    seq_path, work, model, out = sys.argv[1:5]
    self_work = sys.argv[5] if len(sys.argv) > 5 else None
    floor = {"top1": [], "kl_full": [], "kl_head": [], "abs_dh": []}
    meta = json.load(open(f"{work}/meta.json"))
    seqs = json.load(open(seq_path))["sequences"]
    result = {
        "model_file": model.rsplit("/", 1)[-1],
        "gguf_sha256": sha256(model),
        "reference": meta["reference"],
        "mass": MASS,
        "kmin": KMIN,
        "kmax": KMAX,
        "sequences": [],
    }
    stats = []
    for s in seqs:
        ids = [int(x) for x in open(f"{work}/{s['id']}.ids").read().split()]
        raw = np.fromfile(f"{work}/{s['id']}.f32", dtype=np.float32)
        n = len(ids)
        vocab = raw.size // n
        rows = raw.reshape(n, vocab).astype(np.float64)
        other = None
        if self_work:
            assert [int(x) for x in open(f"{self_work}/{s['id']}.ids").read().split()] == ids
            other = np.fromfile(f"{self_work}/{s['id']}.f32", dtype=np.float32).reshape(n, vocab)
        out_rows = []
        for j, r in enumerate(rows):
            m = r.max()
            lse = m + np.log(np.exp(r - m).sum())
            lp = r - lse
            p = np.exp(lp)
            ent = float(-(p * lp).sum())
            order = np.argsort(-lp, kind="stable")
            cum = np.cumsum(p[order])
            k = int(np.searchsorted(cum, MASS) + 1)
            k = max(KMIN, min(KMAX, k))
            head = order[:k]
            tail = float(max(0.0, 1.0 - p[head].sum()))
            if other is not None:
                o = other[j].astype(np.float64)
                om = o.max()
                olp = o - (om + np.log(np.exp(o - om).sum()))
                oq = np.exp(olp)
                floor["top1"].append(float(np.argmax(o) == order[0]))
                floor["kl_full"].append(float((p * (lp - olp)).sum()))
                ptail, qtail = tail, max(1.0 - oq[head].sum(), 1e-300)
                kh = float((p[head] * (lp[head] - olp[head])).sum())
                if ptail > 0:
                    kh += ptail * np.log(ptail / qtail)
                floor["kl_head"].append(kh)
                floor["abs_dh"].append(abs(ent - float(-(oq * olp).sum())))
            out_rows.append({
                "entropy": round(ent, 7),
                "tail": float(f"{tail:.6e}"),
                "ids": [int(i) for i in head],
                "logp": [round(float(lp[i]), 6) for i in head],
            })
            stats.append((k, tail, ent))
        result["sequences"].append({"id": s["id"], "kind": s["kind"], "text": s["text"], "vocab": vocab,
                                    "ids": ids, "rows": out_rows})
    ks = np.array([x[0] for x in stats]); tails = np.array([x[1] for x in stats])
    ents = np.array([x[2] for x in stats])
    if self_work:
        result["llama_cpp_self"] = {
            "what": "llama.cpp against itself on the same ids: the whole sequence in one batch vs one token per batch",
            "positions": len(floor["top1"]),
            "top1": round(float(np.mean(floor["top1"])), 5),
            "mean_kl": round(float(np.mean(floor["kl_head"])), 6),
            "mean_kl_full": round(float(np.mean(floor["kl_full"])), 6),
            "mean_abs_dh": round(float(np.mean(floor["abs_dh"])), 5),
        }
        print(f"{out}: llama.cpp vs itself: {result['llama_cpp_self']}")
    print(f"{out}: {len(stats)} positions, head size median {np.median(ks):.0f} p95 {np.percentile(ks, 95):.0f} "
          f"max {ks.max()}, tail mass max {tails.max():.2e}, mean entropy {ents.mean():.3f} nats")
    with gzip.open(out, "wt", compresslevel=9) as f:
        json.dump(result, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
