// The reference side of declab's logit check: llama.cpp (libllama) tokenizes a text with the
// GGUF's own tokenizer and decodes it in one batch with logits at every position.
//
//   llama-logits MODEL.gguf TEXT_FILE OUT_PREFIX [--tokenize-only] [--kv f32|f16]
//                [--fa auto|on|off] [--ubatch N] [--threads N]
//
// Writes OUT_PREFIX.ids (the token ids, one per line; BOS as the model's metadata asks, special
// tokens in the text parsed as llama-tokenize does by default) and, unless --tokenize-only,
// OUT_PREFIX.f32 (n_tokens rows of n_vocab little-endian float32 logits). Built and run by
// scripts/logit-reference.sh; never in CI.
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>
#include <algorithm>

static void die(const char *msg) {
    fprintf(stderr, "llama-logits: %s\n", msg);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 4) die("usage: llama-logits MODEL TEXT_FILE OUT_PREFIX [--tokenize-only] [--kv f32|f16] [--threads N]");
    const char *model_path = argv[1];
    const char *text_path = argv[2];
    std::string out = argv[3];
    bool tokenize_only = false;
    ggml_type kv = GGML_TYPE_F16;
    int threads = 2;
    int ubatch = 0; // 0: the whole sequence in one batch
    llama_flash_attn_type fa = LLAMA_FLASH_ATTN_TYPE_AUTO;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenize-only")) tokenize_only = true;
        else if (!strcmp(argv[i], "--kv") && i + 1 < argc) kv = !strcmp(argv[++i], "f32") ? GGML_TYPE_F32 : GGML_TYPE_F16;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ubatch") && i + 1 < argc) ubatch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fa") && i + 1 < argc) {
            const char *v = argv[++i];
            fa = !strcmp(v, "on") ? LLAMA_FLASH_ATTN_TYPE_ENABLED
               : !strcmp(v, "off") ? LLAMA_FLASH_ATTN_TYPE_DISABLED : LLAMA_FLASH_ATTN_TYPE_AUTO;
        }
        else die("unknown argument");
    }
    std::ifstream in(text_path, std::ios::binary);
    if (!in) die("cannot read the text file");
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.vocab_only = tokenize_only;
    llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) die("cannot load the model");
    const llama_vocab *vocab = llama_model_get_vocab(model);

    std::vector<llama_token> ids(text.size() + 16);
    int n = llama_tokenize(vocab, text.data(), (int32_t)text.size(), ids.data(), (int32_t)ids.size(),
                           /*add_special*/ true, /*parse_special*/ true);
    if (n < 0) die("tokenization failed");
    ids.resize(n);
    {
        std::ofstream f(out + ".ids");
        for (auto t : ids) f << t << "\n";
    }
    if (tokenize_only) {
        llama_model_free(model);
        return 0;
    }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n + 16;
    cp.n_batch = ubatch > 0 ? ubatch : n;
    cp.n_ubatch = ubatch > 0 ? ubatch : n;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.type_k = kv;
    cp.type_v = kv;
    cp.flash_attn_type = fa;
    cp.no_perf = true;
    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::vector<float> rows;
    rows.reserve((size_t)n * n_vocab);
    llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) die("cannot create the context");
    fprintf(stderr, "llama-logits: flash attention %s\n", llama_flash_attn_type_name(fa));
    const int step = ubatch > 0 ? ubatch : n;
    llama_batch batch = llama_batch_init(step, 0, 1);
    for (int start = 0; start < n; start += step) {
        const int m = std::min(step, n - start);
        for (int i = 0; i < m; i++) {
            batch.token[i] = ids[start + i];
            batch.pos[i] = start + i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = 1;
        }
        batch.n_tokens = m;
        if (llama_decode(ctx, batch) != 0) die("llama_decode failed");
        for (int i = 0; i < m; i++) rows.insert(rows.end(), llama_get_logits_ith(ctx, i), llama_get_logits_ith(ctx, i) + n_vocab);
    }
    FILE *f = fopen((out + ".f32").c_str(), "wb");
    if (!f) die("cannot write the logits");
    if (fwrite(rows.data(), sizeof(float), rows.size(), f) != rows.size()) die("short write");
    fclose(f);
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
