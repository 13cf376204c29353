# Independent numpy unpack of a 4-bit AWQ GEMM checkpoint layer, compared with the dequant fixture.
# Layout: qweight int32 [in, out/8], qzeros int32 [in/group, out/8], scales fp16 [in/group, out].
# Word j of a row holds output columns 8j..8j+7; nibble k (bits 4k..4k+3) holds column 8j + ORDER[k],
# ORDER = [0, 2, 4, 6, 1, 3, 5, 7]. Zeros are stored as-is (no -1). W[i, o] = (q[i, o] - z[i // g, o]) * s[i // g, o].
import sys, numpy as np
from safetensors.numpy import load_file
d, ref = sys.argv[1], sys.argv[2]
ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
def unpack(words):  # [rows, cols/8] int32 -> [rows, cols] codes
    w = words.view(np.uint32)
    out = np.empty((w.shape[0], w.shape[1] * 8), np.int32)
    for k in range(8):
        out[:, ORDER[k]::8] = (w >> (4 * k)) & 0xF
    return out
w = load_file(d + "/model.safetensors"); dq = load_file(ref)
for name in ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"]:
    q = unpack(w[name + ".qweight"]); z = unpack(w[name + ".qzeros"]); s = w[name + ".scales"]
    g = q.shape[0] // s.shape[0]
    gi = np.arange(q.shape[0]) // g
    W = ((q - z[gi]).astype(np.float16) * s[gi]).astype(np.float16)   # [in, out]
    r = dq[name + ".weight"]                                             # [out, in]
    print(name, "q", q.shape, "group", g, "zeros range", int(z.min()), int(z.max()),
          "max|diff|", float(np.abs(W.T.astype(np.float32) - r.astype(np.float32)).max()))
