#!/usr/bin/env bash
# Build llama.cpp (CPU only) from the llama-cpp-python sdist on PyPI into $DECLAB_PEER_DIR
# (default /tmp/declab-peer): libllama, llama-bench, llama-completion, llama-batched-bench and
# llama-tokenize. The reference for speed (scripts/bench-peer.sh) and for logits and token ids
# (scripts/logit-reference.sh). Never run in CI; idempotent (a second call builds nothing new).
# GGML_NATIVE=OFF with explicit flags for the host's class: -march=native would enable AMX,
# which faults in the VM this was first measured on; the AVX-512 set raises SIGILL on AVX2-only
# hosts (AMD Zen 3), which get the AVX2 set, each in a build folder of its own. Prints the build
# folder on its last line.
set -euo pipefail
WORK=${DECLAB_PEER_DIR:-/tmp/declab-peer}
VERSION=0.3.36 # vendors llama.cpp 0c1e570
JOBS=${JOBS:-2}
TARGETS="llama llama-bench llama-completion llama-batched-bench llama-tokenize"
mkdir -p "$WORK"
if grep -qw avx512f /proc/cpuinfo; then
  ISA=avx512
  ISA_FLAGS="-DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON"
else
  ISA=avx2
  ISA_FLAGS="-DGGML_AVX512=OFF -DGGML_AVX_VNNI=$(grep -qw avx_vnni /proc/cpuinfo && echo ON || echo OFF)"
fi
BUILD=$WORK/build-$ISA
BIN=$BUILD/bin
missing=0
for t in llama-bench llama-completion llama-batched-bench llama-tokenize; do
  [ -x "$BIN/$t" ] || missing=1
done
if [ "$missing" = 1 ]; then
  [ -x "$WORK/venv/bin/cmake" ] || {
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q cmake ninja scikit-build-core
  }
  [ -f "$WORK/llama_cpp_python-$VERSION.tar.gz" ] || \
    PATH=$WORK/venv/bin:$PATH "$WORK/venv/bin/pip" download -q --no-deps --no-binary llama-cpp-python \
      --no-build-isolation -d "$WORK" "llama-cpp-python==$VERSION"
  [ -d "$WORK/llama_cpp_python-$VERSION" ] || tar xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
  SRC=$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp
  # shellcheck disable=SC2086
  PATH=$WORK/venv/bin:$PATH cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
    -DGGML_F16C=ON -DGGML_BMI2=ON $ISA_FLAGS -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
    -DGGML_AMX_BF16=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF >/dev/null
  # shellcheck disable=SC2086
  PATH=$WORK/venv/bin:$PATH ninja -C "$BUILD" -j"$JOBS" $TARGETS >/dev/null
fi
echo "$BUILD"
