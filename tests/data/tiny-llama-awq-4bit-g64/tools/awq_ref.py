# Reference outputs + layer-0 dequantized weights for an AWQ (GEMM) checkpoint, via GPTQModel (torch AWQ backend).
# Mirrors /work/shared/fixtures/tools/gptq_ref.py.
# usage: awq_ref.py QUANT_DIR OUT_DIR FP16_BASE_DIR [COMPUTE_DTYPE=float16]
import sys, os, json, torch
# refcommon.py: the fixtures' own (../shared/fixtures/tools), not copied here.
sys.path.insert(0, os.environ.get("FIXTURE_TOOLS", __file__.rsplit("/", 1)[0] + "/../../../../../shared/fixtures/tools"))
from refcommon import run_reference, dump, fp32_dequant_reference
from safetensors.torch import save_file
import transformers, gptqmodel
from gptqmodel import GPTQModel, BACKEND
from gptqmodel.nn_modules.qlinear import BaseQuantLinear
from gptqmodel.quantization.awq.utils.packing_utils import dequantize_gemm

d, out_dir = sys.argv[1], sys.argv[2]
base = sys.argv[3]
cdt = getattr(torch, sys.argv[4]) if len(sys.argv) > 4 else torch.float16
os.makedirs(out_dir, exist_ok=True)
dev = "cuda:0" if torch.cuda.is_available() else "cpu"
m = GPTQModel.load(d, backend=BACKEND.AWQ_TORCH, device=dev, dtype=cdt)
hf = m.model
hf.eval()
@torch.no_grad()
def f(ids):
    x = torch.tensor([ids], device=dev)
    return hf(input_ids=x).logits[0, -1]

def lib_dequant(mod):
    # GPTQModel's AWQ GEMM dequantization (the function AwqTorchLinear's forward uses): returns [in, out]
    return dequantize_gemm(qweight=mod.qweight, qzeros=mod.qzeros, scales=mod.scales,
                           bits=mod.bits, group_size=mod.group_size)

layer0 = hf.model.layers[0]
kinds = {}
tensors = {}
checks = {}
with torch.no_grad():
    for name, mod in [("model.layers.0.self_attn.q_proj", layer0.self_attn.q_proj),
                      ("model.layers.0.mlp.down_proj", layer0.mlp.down_proj)]:
        kinds[name] = type(mod).__name__
        w_in_out = lib_dequant(mod)
        w = w_in_out.t().contiguous().to(torch.float16).cpu()           # stored as [out, in] like nn.Linear.weight
        tensors[name + ".weight"] = w
        # the module's own dequant helper used inside its forward
        eye = torch.eye(mod.in_features, dtype=torch.float16, device=dev)
        w2 = mod._dequantize_weight_for_inference(eye, dtype=torch.float16).t().to(torch.float16).cpu()
        # forward of identity through the quantized module -> W^T
        w3 = mod(eye).t().to(torch.float16).cpu()
        checks[name] = {"shape_out_in": list(w.shape), "dequant_dtype": str(w_in_out.dtype),
                        "max_abs_diff_vs_module_dequantize_weight_for_inference": float((w.float() - w2.float()).abs().max()),
                        "max_abs_diff_vs_forward_identity": float((w.float() - w3.float()).abs().max())}
save_file(tensors, os.path.join(out_dir, "dequant_layer0.safetensors"),
          metadata={"producer": f"gptqmodel {gptqmodel.__version__} gptqmodel.quantization.awq.utils.packing_utils.dequantize_gemm "
                                "(used by AwqTorchLinear.forward)",
                    "layout": "[out_features, in_features] float16 (transpose of GPTQModel's [in, out] result)"})
cfg = json.load(open(os.path.join(d, "config.json")))
qc = cfg["quantization_config"]
meta = {"library": "gptqmodel", "gptqmodel_version": gptqmodel.__version__,
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
        "backend": "BACKEND.AWQ_TORCH", "qlinear_class": kinds,
        "device": torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu",
        "compute_dtype": str(cdt).replace("torch.", ""),
        "quantization_config": {k: qc.get(k) for k in ["quant_method", "bits", "group_size", "desc_act", "zero_point",
                                                       "format", "checkpoint_format", "version", "pack_dtype"]},
        "dequant_checks": checks}
ref = run_reference(f, d, meta)
dq_all = {}
with torch.no_grad():
    for name, mod in hf.named_modules():
        if isinstance(mod, BaseQuantLinear):
            dq_all[name + ".weight"] = lib_dequant(mod).t().to(torch.float16).cpu()
print("quantized linears:", len(dq_all))
del m, hf
fp = fp32_dequant_reference(base, d, dq_all, dev)
ref["fp32_dequant_reference"] = fp
for p, q in zip(ref["prompts"], fp["prompts"]):
    p["last_logits_max_abs_diff_vs_fp32_dequant"] = round(max(abs(a - b) for a, b in zip(p["last_logits"], q["last_logits"])), 5)
    print("vs fp32-dequant:", p["last_logits_max_abs_diff_vs_fp32_dequant"], p["greedy_ids"] == q["greedy_ids"])
dump(ref, os.path.join(out_dir, "reference.json"))
print(json.dumps(checks, indent=1))
