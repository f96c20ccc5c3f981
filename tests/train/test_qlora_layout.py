"""QLoRA keeps training after an evaluation, whatever the CPU (bitsandbytes repacks NF4 weights
for inference on AVX-512-BF16 CPUs unless the project pins the layout)."""

import torch

from remoteglm.model.checkpoint import load_model
from remoteglm.model.lora import add_lora


def _step(model, ids, opt):
    logits = model(input_ids=ids)[0]
    loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def test_qlora_train_eval_train(tiny_checkpoint):
    model, tok, _ = load_model(tiny_checkpoint)
    torch.manual_seed(0)
    add_lora(model, 4, lora_alpha=4, qlora=True)
    for name, p in model.named_parameters():
        p.requires_grad_(".matrix_" in name)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.tensor([tok.encode("问：描述这张图片。\n答：一片农田")])
    model.train()
    first = [_step(model, ids, opt) for _ in range(3)]
    model.eval()
    with torch.no_grad():  # what sat's evaluation does between training steps
        model(input_ids=ids)
    model.train()
    after = [_step(model, ids, opt) for _ in range(5)]
    assert all(torch.isfinite(torch.tensor(first + after)))
    assert after[-1] < first[0]
