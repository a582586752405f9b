"""The training fast path (`geovlm.train.fast`): each shortcut of `FastLoss` against the plain
computation, and `lean_mlps` against Qwen2's MLP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

from geovlm.modeling import GeoVLM, GeoVLMConfig
from geovlm.modeling.special_tokens import (
    IM_END_ID,
    IM_START_ID,
    IMAGE_PAD_ID,
    VISION_END_ID,
    VISION_START_ID,
)
from geovlm.train.fast import FastLoss
from geovlm.train.fast.swiglu import use_lean_mlps

PAD, IM_START, IM_END, V_START, V_END = IMAGE_PAD_ID, IM_START_ID, IM_END_ID, VISION_START_ID, VISION_END_ID


def fast_tiny(**overrides) -> tuple[GeoVLM, FastLoss]:
    """A tiny model with lean MLPs, as a training run has it, and a fast loss for it."""
    torch.manual_seed(0)
    model = GeoVLM(GeoVLMConfig.from_preset("tiny", **overrides)).eval()
    use_lean_mlps(model)
    return model, FastLoss()


def image_prompt(n_pads: int, text: list[int]) -> list[int]:
    return [IM_START, 872, 198, V_START] + [PAD] * n_pads + [V_END] + text + [IM_END, 198, IM_START, 77091, 198]


def test_the_fast_loss_is_the_plain_forwards_and_leaves_the_model_as_it_was():
    from geovlm.train.fast import lean_mlps
    from geovlm.train.fast.swiglu import LeanQwen2MLP

    torch.manual_seed(0)
    model = GeoVLM(GeoVLMConfig.from_preset("tiny")).train()
    ids = torch.tensor([image_prompt(49, [100, 101, 102])])
    pixels = torch.randn(1, 3, 224, 224)
    plain = model(input_ids=ids, pixel_values=pixels, labels=ids)
    with lean_mlps(model) as switched:
        assert switched == 2 and all(type(layer.mlp) is LeanQwen2MLP for layer in model.model.language_model.layers)
        fast = FastLoss()(model, {"input_ids": ids, "pixel_values": pixels, "labels": ids})
        torch.testing.assert_close(fast, plain.loss)
    assert "forward" not in vars(model)  # nothing is patched on the instance
    assert all(type(layer.mlp) is Qwen2MLP for layer in model.model.language_model.layers)


def test_an_unexpected_input_is_an_error_not_a_silent_other_loss():
    model, fast = fast_tiny()
    ids = torch.tensor([image_prompt(49, [100, 101])])
    with pytest.raises(ValueError, match="position_ids"):
        fast(model, {"input_ids": ids, "labels": ids, "pixel_values": torch.randn(1, 3, 224, 224),
                     "position_ids": torch.arange(ids.shape[1])[None]})


def test_the_fast_loss_goes_through_wrappers():
    from torch.nn.parallel import DistributedDataParallel  # noqa: F401 (its .module attribute is what matters)

    from geovlm.train.fast.loss import geovlm_of

    model, fast = fast_tiny()

    class Wrapper(torch.nn.Module):  # DDP and DeepSpeed hold the model as .module
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    wrapped = Wrapper(model)
    assert geovlm_of(wrapped) is model
    ids = torch.tensor([image_prompt(49, [100, 101, 102])])
    batch = {"input_ids": ids, "pixel_values": torch.randn(1, 3, 224, 224), "labels": ids}
    torch.testing.assert_close(fast(wrapped, batch), fast(model, batch))
    with pytest.raises(TypeError, match="needs a GeoVLM model"):
        geovlm_of(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------- loss
def test_sliced_logit_loss_equals_full_logit_loss():
    model, fast = fast_tiny()
    ids = torch.tensor([image_prompt(49, [100, 101, 102, 103]), image_prompt(49, [104, 105, 106, 107])])
    labels = ids.clone()
    labels[:, :-6] = -100
    labels[1, -3:] = -100
    pixels = torch.randn(2, 3, 224, 224)
    sliced = fast(model, {"input_ids": ids, "pixel_values": pixels, "labels": labels})
    logits = model(input_ids=ids, pixel_values=pixels).logits
    full = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert abs(sliced.item() - full.item()) < 1e-5
    # num_items_in_batch turns the mean into a sum over a global token count (gradient accumulation).
    n = int((labels[:, 1:] != -100).sum())
    summed = fast(model, {"input_ids": ids, "pixel_values": pixels, "labels": labels}, num_items_in_batch=2 * n)
    assert abs(summed.item() - full.item() / 2) < 1e-5


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_loss_equals_each_sample_alone(side):
    """Right padding drops the mask (the causal mask hides pads); left padding keeps it. Both must
    give each row the loss and gradient it has alone."""
    from geovlm.train.fast.loss import padding_is_causally_hidden

    model, fast = fast_tiny()
    model.train()
    rows = [image_prompt(49, [100, 101, 102, 103, 104, 105]), image_prompt(49, [106, 107])]
    pixels = torch.randn(2, 3, 224, 224)
    length = max(map(len, rows))
    ids = torch.full((2, length), 0)
    mask = torch.zeros(2, length, dtype=torch.long)
    labels = torch.full((2, length), -100)
    alone_sum, count = 0.0, 0
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(length - len(row), length)
        ids[i, span], mask[i, span] = torch.tensor(row), 1
        labels[i, span] = torch.tensor([-100] * (len(row) - 5) + row[-5:])
        one = fast(model, {"input_ids": ids[i:i + 1, span], "pixel_values": pixels[i:i + 1],
                           "labels": labels[i:i + 1, span]})
        n = int((labels[i, span][1:] != -100).sum())
        alone_sum, count = alone_sum + one * n, count + n
    assert padding_is_causally_hidden(mask, labels) == (side == "right")
    batched = fast(model, {"input_ids": ids, "pixel_values": pixels, "attention_mask": mask, "labels": labels})
    torch.testing.assert_close(batched, alone_sum / count, rtol=1e-5, atol=1e-5)
    plain = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(batched, plain, rtol=1e-5, atol=1e-5)
    grad_batched = torch.autograd.grad(batched, model.model.projector.linear_1.weight)[0]
    grad_alone = torch.autograd.grad(alone_sum / count, model.model.projector.linear_1.weight)[0]
    torch.testing.assert_close(grad_batched, grad_alone, rtol=1e-4, atol=1e-6)
    # A supervised pad position must keep the mask (its loss would read garbage otherwise).
    labels[mask == 0] = 7
    assert not padding_is_causally_hidden(mask, labels)


def test_frozen_vision_tower_builds_no_graph():
    model, fast = fast_tiny()
    model.train()
    model.model.vision_tower.requires_grad_(False)
    model.model.language_model.requires_grad_(False)
    ids = torch.tensor([image_prompt(49, [100, 101])])
    loss = fast(model, {"input_ids": ids, "pixel_values": torch.randn(1, 3, 224, 224), "labels": ids})
    loss.backward()
    assert model.model.projector.linear_1.weight.grad is not None
    assert all(p.grad is None for p in model.model.vision_tower.parameters())
    # Frozen tower, plain pixels: autograd keeps none of its activations for the backward.
    seen = []
    hook = model.model.vision_tower.register_forward_hook(lambda m, i, o: seen.append(o.last_hidden_state.grad_fn))
    model.get_image_features(torch.randn(1, 3, 224, 224))
    hook.remove()
    assert seen == [None]


SYSTEM = [IM_START, 8948, 198, 2610, 525, 264, 10950, 17847, 13, IM_END, 198]  # "system\nYou are a helpful assistant."


def test_shared_prefix_length_stops_at_divergence_images_and_targets():
    from geovlm.train.fast.shared_prefix import shared_prefix_length

    ids = torch.tensor([SYSTEM + [1, 2, PAD, PAD, 5, 6], SYSTEM + [1, 2, PAD, PAD, 7, 8]])
    labels = torch.full_like(ids, -100)
    assert shared_prefix_length(ids, labels, PAD) == len(SYSTEM) + 2  # the image starts there
    labels[1, len(SYSTEM) + 1] = 2  # predicted from the position before it, which must stay
    assert shared_prefix_length(ids, labels, PAD) == len(SYSTEM)
    ids[0, 3] = 99
    assert shared_prefix_length(ids, labels, PAD) == 3
    text = torch.tensor([[1, 2, 3], [1, 2, 3]])
    assert shared_prefix_length(text, torch.full_like(text, -100), PAD) == 2  # one position is left


def stage1_batch() -> tuple[dict, int]:
    """Three right-padded rows that start with the same system turn; pads at the end."""
    rows = [SYSTEM + image_prompt(49, [100, 101, 102, 103, 104, 105]), SYSTEM + image_prompt(49, [106, 107]),
            SYSTEM + image_prompt(49, [108, 109, 110])]
    length = max(map(len, rows))
    ids, mask = torch.zeros(3, length, dtype=torch.long), torch.zeros(3, length, dtype=torch.long)
    labels = torch.full((3, length), -100)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
        labels[i, len(row) - 4:len(row)] = torch.tensor(row[-4:])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": torch.randn(3, 3, 224, 224)}, length


def loss_grad_and_lengths(model: GeoVLM, fast: FastLoss, batch: dict) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Loss, projector gradient, and the sequence length each call of the first LM layer saw."""
    lengths: list[int] = []
    hook = model.model.language_model.layers[0].register_forward_pre_hook(
        lambda m, args: lengths.append(args[0].shape[1]))
    loss = fast(model, batch)
    hook.remove()
    return loss, torch.autograd.grad(loss, model.model.projector.linear_1.weight)[0], lengths


def test_shared_prefix_of_a_frozen_lm_runs_once_and_changes_nothing(monkeypatch):
    from geovlm.train.fast import loss as model_module

    model, fast = fast_tiny()
    model.train()
    model.model.vision_tower.requires_grad_(False)
    model.model.language_model.requires_grad_(False)
    batch, length = stage1_batch()
    loss, grad, lengths = loss_grad_and_lengths(model, fast, batch)
    assert lengths == [len(SYSTEM) + 4, length - len(SYSTEM) - 4]  # system turn + "<|im_start|>user\n<|vision_start|>"
    assert loss_grad_and_lengths(model, fast, batch)[2] == [length - len(SYSTEM) - 4]  # the next step reuses it
    assert fast.shared_prefix.runs == 1
    monkeypatch.setattr(model_module, "shared_prefix_length", lambda *args: 0)
    plain_loss, plain_grad, plain_lengths = loss_grad_and_lengths(model, fast, batch)
    assert plain_lengths == [length]
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, plain_grad, rtol=1e-4, atol=1e-7)


def test_shared_prefix_up_to_the_first_target_changes_no_loss(monkeypatch):
    """Text-only rows that share everything up to the answer: the prefix ends one position before
    the first supervised token, whose prediction comes from the rows' own first position."""
    from geovlm.train.fast import loss as model_module

    model, fast = fast_tiny()
    model.train().requires_grad_(False)
    question = SYSTEM + [IM_START, 872, 198, 5, 6, 7, IM_END, 198, IM_START, 77091, 198]
    answers = [[300, 301, 302], [400, 401], [500, 501, 502]]
    length = len(question) + 4
    ids, labels = torch.zeros(3, length, dtype=torch.long), torch.full((3, length), -100)
    mask = torch.zeros(3, length, dtype=torch.long)
    for i, answer in enumerate(answers):
        row = question + answer + [IM_END]
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
        labels[i, len(question):len(row)] = torch.tensor(answer + [IM_END])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    lengths: list[int] = []
    model.model.language_model.layers[0].register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    shared = fast(model, batch)
    assert lengths == [len(question) - 1, length - len(question) + 1]
    monkeypatch.setattr(model_module, "shared_prefix_length", lambda *args: 0)
    torch.testing.assert_close(shared, fast(model, batch), rtol=1e-5, atol=1e-6)


def test_shared_prefix_is_not_kept_when_weights_could_change_unseen():
    model, fast = fast_tiny()
    model.train()
    model.model.vision_tower.requires_grad_(False)
    model.model.language_model.requires_grad_(False)
    batch, _ = stage1_batch()
    fast(model, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the cached keys were computed in float32
        fast(model, batch)
    assert fast.shared_prefix.runs == 2
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(target_modules=["k_proj"], r=2), model.model.language_model)
    model.model.language_model.requires_grad_(False)  # adapters can still be switched off or merged via .data
    fast(model, batch)
    fast(model, batch)
    assert fast.shared_prefix.runs == 4


def test_sliding_window_layers_take_the_whole_sequence():
    model, fast = fast_tiny(text={"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 0})
    model.train()
    model.model.vision_tower.requires_grad_(False)
    model.model.language_model.requires_grad_(False)
    batch, length = stage1_batch()
    assert loss_grad_and_lengths(model, fast, batch)[2] == [length]  # a window-sized cache would shift positions


def test_shared_prefix_is_recomputed_when_weights_or_ids_change():
    model, fast = fast_tiny()
    model.train()
    model.model.vision_tower.requires_grad_(False)
    model.model.language_model.requires_grad_(False)
    batch, _ = stage1_batch()
    fast(model, batch)
    with torch.no_grad():  # e.g. load_state_dict, or an optimizer on a layer the user unfroze
        model.model.language_model.layers[0].self_attn.k_proj.weight.mul_(64.0)
    changed = fast(model, batch)
    assert fast.shared_prefix.runs == 2
    fast.shared_prefix.clear()
    with torch.no_grad():
        model.model.language_model.layers[0].self_attn.k_proj.weight.div_(64.0)
    fast(model, batch)
    assert not torch.allclose(changed, fast(model, batch), rtol=0, atol=1e-6)  # the test can tell the weights apart
    batch["input_ids"][:, 2] = 4  # another system prompt
    fast(model, batch)
    assert fast.shared_prefix.runs == 4


def test_shared_prefix_is_not_used_when_the_lm_trains_or_recomputes():
    model, fast = fast_tiny()
    model.train()
    model.model.vision_tower.requires_grad_(False)
    batch, length = stage1_batch()
    assert loss_grad_and_lengths(model, fast, batch)[2] == [length]  # the LM trains: prefix positions need gradients
    model.model.language_model.requires_grad_(False)
    model.activation_checkpointing_enable(every_n_layers=2)  # a layer's recompute would drop the prefix's cache
    assert loss_grad_and_lengths(model, fast, batch)[2] == [length]
    model.activation_checkpointing_disable()
    assert len(loss_grad_and_lengths(model, fast, batch)[2]) == 2
    model.config.text_config.attention_dropout = 0.1  # rows would draw different dropout
    assert loss_grad_and_lengths(model, fast, batch)[2] == [length]




def test_image_free_batch_still_trains_the_connector():
    """Stage 1 on a text-only batch: the loss must still reach the projector (and DDP must see it used)."""
    model, fast = fast_tiny()
    model.train()
    model.model.vision_tower.requires_grad_(False)
    model.model.language_model.requires_grad_(False)
    ids = torch.tensor([[IM_START, 872, 198, 100, 101, IM_END, 198, IM_START, 77091, 198, 102, IM_END]])
    loss = fast(model, {"input_ids": ids, "labels": ids})
    loss.backward()
    grad = model.model.projector.linear_1.weight.grad
    assert grad is not None and torch.count_nonzero(grad) == 0  # used, contributing exactly zero
    model.zero_grad(set_to_none=True)
    plain = model(input_ids=ids, labels=ids).loss  # the model's own forward keeps it in the graph too
    plain.backward()
    assert model.model.projector.linear_1.weight.grad is not None
    torch.testing.assert_close(plain, loss)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, labels=ids).loss, loss.detach())




def test_lean_mlp_matches_qwen2_mlp_and_keeps_less_for_backward():
    from geovlm.train.fast.swiglu import LeanQwen2MLP

    model, fast = fast_tiny()
    assert all(type(layer.mlp) is LeanQwen2MLP for layer in model.model.language_model.layers)
    lean = model.model.language_model.layers[0].mlp.double()
    plain = Qwen2MLP(model.config.text_config).double()
    plain.load_state_dict(lean.state_dict())
    x = torch.randn(3, 7, model.config.text_config.hidden_size, dtype=torch.float64, requires_grad=True)
    out_lean, out_plain = lean(x), plain(x)
    assert torch.equal(out_lean, out_plain)  # the same forward operations
    grads = [torch.autograd.grad(out.square().sum(), [x, *m.parameters()])
             for out, m in ((out_lean, lean), (out_plain, plain))]
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)  # the same kernels as stock autograd

    def activations_kept(mlp) -> int:  # elements autograd keeps for the backward, weights frozen
        mlp.requires_grad_(False)
        weights = {p.data_ptr() for p in mlp.parameters()}
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: sizes.append(0 if t.data_ptr() in weights else t.numel()) or t, lambda t: t):
            mlp(x)
        return sum(sizes)

    intermediate = x.shape[0] * x.shape[1] * model.config.text_config.intermediate_size
    assert activations_kept(plain) == 3 * intermediate
    assert activations_kept(lean) == 2 * intermediate
    # bf16 too (modules converted in place, weights trainable again)
    x_bf16 = x.detach().bfloat16().requires_grad_()
    grads = [torch.autograd.grad(m.bfloat16().requires_grad_(True)(x_bf16).float().square().sum(),
                                 [x_bf16, *m.parameters()]) for m in (lean, plain)]
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)
