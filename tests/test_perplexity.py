"""Perplexity's loss is computed in chunks of positions and equals the full-logits loss."""
import pytest
import torch
from torch import nn

from acttail_lab.measure import perplexity as ppl
from acttail_lab.measure.perplexity import _window_nll, _window_nll_full, perplexity


def _model(family: str, **extra):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(family, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, vocab_size=300, head_dim=8, **extra)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("family,extra", [("llama", {}), ("qwen2", {}),
                                          ("gemma3_text", {"final_logit_softcapping": 5.0})])
@pytest.mark.parametrize("start", [0, 6])
def test_chunked_loss_equals_full_logits_loss(family, extra, start, monkeypatch):
    model = _model(family, **extra)
    ids = torch.randint(0, 300, (3, 13), generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(ppl, "LOGIT_BUDGET", 300 * 5)  # 5 positions per chunk: many chunks
    with torch.inference_mode():
        chunked = _window_nll(model, ids, start, keep_arg=True)
        full = _window_nll_full(model, ids, start, keep_arg=True)
    assert chunked[1] == full[1] == 12 - start  # targets per window
    assert chunked[0].shape == full[0].shape == (3,)
    assert torch.allclose(chunked[0], full[0], rtol=1e-5)


def test_lm_head_never_sees_more_than_one_chunk(monkeypatch):
    model = _model("llama")
    seen = []
    model.lm_head.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    monkeypatch.setattr(ppl, "LOGIT_BUDGET", 300 * 7)
    result = perplexity(model, torch.randint(0, 300, (4, 16)), batch_size=4, progress=False)
    assert max(seen) <= 7 and sum(seen) == result.tokens == 4 * 15


def test_unknown_architecture_uses_the_models_own_forward():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 10)

        def forward(self, input_ids, use_cache=False):
            return type("Out", (), {"logits": self.emb(input_ids)})()

    nll, n = _window_nll(Toy(), torch.randint(0, 10, (2, 5)), 0, keep_arg=False)
    assert n == 4 and nll.shape == (2,) and bool((nll > 0).all())


@pytest.mark.parametrize("protocol", ["all", "last_half"])
def test_window_losses_are_each_windows_own_mean_and_average_to_the_nll(protocol):
    model = _model("llama")
    windows = torch.randint(0, 300, (5, 12), generator=torch.Generator().manual_seed(2))
    result = perplexity(model, windows, batch_size=2, progress=False, protocol=protocol)
    assert len(result.window_nll) == 5
    assert sum(result.window_nll) / 5 == pytest.approx(result.nll, rel=1e-12)
    alone = perplexity(model, windows[3:4], progress=False, protocol=protocol)  # window 3 on its own
    assert result.window_nll[3] == pytest.approx(alone.nll, rel=1e-6)
    assert len(set(result.window_nll)) == 5
