"""Stage 1 saliency, the losses against naive references, and gradient flow in stage 2."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import random_ids, tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.training.losses import distill_loss, lm_loss, mse_loss, ranking_loss
from sdtp_adapter.training.objective import sdtp_loss
from sdtp_adapter.training.saliency import normalize_saliency, target_log_likelihood, token_saliency
from sdtp_adapter.training.simulation import MaskSimulation

CONFIG = dict(prune_layers=[2, 4, 6], keep_ratio=0.7)


def naive_ranking(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    total, pairs = s.new_zeros(()), 0
    for i in range(len(s)):
        for j in range(i + 1, len(s)):
            sign = torch.sign(t[i] - t[j])
            if sign == 0:
                continue
            total = total + torch.log1p(torch.exp(-(s[i] - s[j]) * sign))
            pairs += 1
    return total / max(pairs, 1)


@pytest.mark.parametrize("n,chunk", [(7, 512), (13, 3), (20, 1)])
def test_ranking_loss_equals_naive_double_loop(n, chunk):
    g = torch.Generator().manual_seed(n)
    s = torch.randn(n, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randint(0, 4, (n,), generator=g).double()  # ties included
    fast = ranking_loss(s, t, chunk=chunk)
    ref = naive_ranking(s, t)
    torch.testing.assert_close(fast, ref)
    (g_fast,) = torch.autograd.grad(fast, s)
    (g_ref,) = torch.autograd.grad(ref, s)
    torch.testing.assert_close(g_fast, g_ref)


def test_ranking_loss_all_ties_is_zero_and_gradcheck():
    s = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert float(ranking_loss(s, torch.ones(5, dtype=torch.float64))) == 0.0
    t = torch.rand(6, dtype=torch.float64)
    s = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ranking_loss(x, t, chunk=2), (s,))


def test_ranking_loss_is_memory_bounded_on_4k_tokens():
    n = 4096
    s = torch.randn(n, requires_grad=True)
    t = torch.rand(n)
    loss = ranking_loss(s, t, chunk=256)
    loss.backward()
    assert math.isfinite(float(loss)) and s.grad.abs().sum() > 0
    # the autograd graph keeps only the inputs, not an n x n matrix
    assert loss.grad_fn.__class__.__name__.endswith("Backward")


def test_mse_and_lm_loss_match_definitions():
    p, t = torch.rand(10), torch.rand(10)
    torch.testing.assert_close(mse_loss(p, t), ((p - t) ** 2).mean())
    logits = torch.randn(1, 6, 11)
    ids = torch.randint(0, 11, (1, 6))
    mask = torch.tensor([[False, False, False, True, True, True]])
    ref = -sum(torch.log_softmax(logits[0, i - 1], -1)[ids[0, i]] for i in (3, 4, 5)) / 3
    torch.testing.assert_close(lm_loss(logits, ids, mask), ref)


def test_distill_loss_matches_the_kl_definition():
    """Mean over target positions of sum_v p_teacher(v) * (log p_teacher(v) - log p_student(v))."""
    student, teacher = torch.randn(2, 6, 11), torch.randn(2, 6, 11)
    mask = torch.tensor([[False, False, False, True, True, True], [False, True, False, False, False, True]])
    terms = []
    for b in range(2):
        for i in range(1, 6):
            if mask[b, i]:
                p, q = torch.softmax(teacher[b, i - 1], -1), torch.softmax(student[b, i - 1], -1)
                terms.append(sum(p[v] * (torch.log(p[v]) - torch.log(q[v])) for v in range(11)))
    torch.testing.assert_close(distill_loss(student, teacher, mask), torch.stack(terms).mean())
    assert float(distill_loss(teacher, teacher, mask)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="no target token"):
        distill_loss(student, teacher, torch.zeros(2, 6, dtype=torch.bool))


def test_distill_teacher_is_the_unpruned_model():
    """The teacher logits come from the saliency pass: they equal an unpruned forward's, and with nothing to
    prune (keep_ratio 1) the student equals the teacher, so the distillation term is zero."""
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**{**CONFIG, "keep_ratio": 1.0}, distill_loss_weight=1.0))
    ids = random_ids(40)
    target = torch.zeros_like(ids, dtype=torch.bool)
    target[:, 30:] = True
    out = {}
    token_saliency(model.base_model, ids, target, [2], logits_out=out)
    with model.disable_pruning(), torch.no_grad():
        full = model(ids, use_cache=False).logits[:, -11:]  # from position 29, which predicts the first target
    torch.testing.assert_close(out["logits"], full)
    assert sdtp_loss(model, ids, target, gumbel=False).distill == pytest.approx(0.0, abs=1e-5)


def test_saliency_matches_independent_autograd_per_layer():
    model = tiny_llama(layers=6)
    ids = random_ids(24)
    target = torch.zeros_like(ids, dtype=torch.bool)
    target[:, 18:] = True
    layers = [2, 4]
    got = token_saliency(model, ids, target, layers)
    # independent: take layer l's input as a leaf and run the remaining layers by hand
    with torch.no_grad():
        states = model(ids, output_hidden_states=True, use_cache=False).hidden_states
    decoder = model.model
    positions = torch.arange(ids.shape[1])[None]
    rope = decoder.rotary_emb(states[0], positions)
    for layer in layers:
        x = states[layer].clone().requires_grad_(True)
        h = x
        for block in decoder.layers[layer:]:
            h = block(h, attention_mask=None, position_embeddings=rope, position_ids=positions)
        logits = model.lm_head(decoder.norm(h))
        (grad,) = torch.autograd.grad(target_log_likelihood(logits, ids, target), x)
        torch.testing.assert_close(got[layer], (grad * x).sum(-1).abs().detach(), rtol=1e-4, atol=1e-6)


def test_normalize_saliency_uses_candidates_max():
    raw = torch.tensor([[100.0, 2.0, 4.0, 1.0]])
    cand = torch.tensor([[False, True, True, True]])
    torch.testing.assert_close(normalize_saliency(raw, cand), torch.tensor([[1.0, 0.5, 1.0, 0.25]]))


def test_simulation_keeps_the_inference_budget():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG))
    ids = random_ids(50)
    sim = MaskSimulation(model.schedule, model.pruner, 50, 1.0)
    with model.simulate(sim):
        model(ids, use_cache=False)
    budgets = model.schedule.budgets(50)
    assert [int(r.kept.sum()) for r in sim.records] == budgets
    for earlier, later in zip(sim.records, sim.records[1:]):
        assert not bool((later.kept & ~earlier.kept).any())  # dropped tokens never come back


@pytest.mark.parametrize("term", ["lm", "distill", "mse", "rank"])
def test_each_loss_term_reaches_every_pruning_module(term):
    weights = {"lm_loss_weight": 0.0, "mse_loss_weight": 0.0, "rank_loss_weight": 0.0, f"{term}_loss_weight": 1.0}
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG, **weights))
    ids = random_ids(40)
    target = torch.zeros_like(ids, dtype=torch.bool)
    target[:, 30:] = True
    before = {k: v.clone() for k, v in model.base_model.state_dict().items()}
    torch.manual_seed(0)
    loss = sdtp_loss(model, ids, target)
    loss.total.backward()
    for layer, module in model.pruners.items():
        grad = module.fc1.weight.grad
        assert grad is not None and float(grad.abs().sum()) > 0, f"{term} loss gives no gradient to stage {layer}"
    assert all(p.grad is None for p in model.base_model.parameters())
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    for k, v in model.base_model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_training_loop_moves_only_the_modules_and_checkpoints(tmp_path):
    from datasets import Dataset

    from sdtp_adapter import SDTPModel
    from sdtp_adapter.training.trainer import TrainingArguments, train

    model = get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG))
    rows = []
    for seed in range(3):
        ids = random_ids(40, seed=seed)[0].tolist()
        rows.append({"input_ids": ids, "target_mask": [i >= 30 for i in range(40)]})
    base_before = {k: v.clone() for k, v in model.base_model.state_dict().items()}
    pruners_before = {k: v.clone() for k, v in model.pruners.state_dict().items()}
    result = train(model, Dataset.from_list(rows), TrainingArguments(output_dir=str(tmp_path), steps=4, save_every=2, warmup_steps=1))
    history = result.joint
    assert [h["step"] for h in history] == [1, 2, 3, 4] and all(math.isfinite(h["loss"]) for h in history)
    assert len(result.warm_start) == 6 and all(math.isfinite(x) for x in result.warm_start)
    assert (tmp_path / "loss_curves.json").is_file() and (tmp_path / "loss_curves.png").stat().st_size > 1000
    assert (tmp_path / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "trainer_state.json").is_file()
    assert all(torch.equal(v, base_before[k]) for k, v in model.base_model.state_dict().items())
    assert any(not torch.equal(v, pruners_before[k]) for k, v in model.pruners.state_dict().items())
    reloaded = SDTPModel.from_pretrained(tiny_llama(), tmp_path)
    assert all(torch.equal(v, model.pruners.state_dict()[k]) for k, v in reloaded.pruners.state_dict().items())


def test_training_arguments_and_dataset_are_validated(tmp_path):
    from datasets import Dataset

    from sdtp_adapter.training.trainer import TrainingArguments, train

    with pytest.raises(ValueError, match="TrainingArguments.steps=0"):
        TrainingArguments(output_dir=str(tmp_path), steps=0)
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG))
    with pytest.raises(ValueError, match="target_mask"):
        train(model, Dataset.from_list([{"input_ids": [1, 2, 3]}]), TrainingArguments(output_dir=str(tmp_path), steps=1))


def test_token_marking_and_saliency_warm_start():
    from datasets import Dataset

    from sdtp_adapter.training.marking import mark_tokens
    from sdtp_adapter.training.warm_start import fit_to_saliency

    model = get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG))
    rows = [{"input_ids": random_ids(40, seed=s)[0].tolist(), "target_mask": [i >= 30 for i in range(40)]} for s in range(4)]
    marked = mark_tokens(model, Dataset.from_list(rows), dtype=torch.float32)
    n_candidates = 40 - model.schedule.protected_count(40)
    for sample in marked:
        assert sorted(sample.stages) == [2, 4, 6]
        for hidden, target in sample.stages.values():
            assert hidden.shape == (n_candidates, 64) and target.shape == (n_candidates,)
            assert float(target.max()) == pytest.approx(1.0) and float(target.min()) >= 0
    # stored targets are the stand-alone saliency of the same tokens
    ids = torch.tensor([rows[0]["input_ids"]])
    with model.disable_pruning():
        raw = token_saliency(model.base_model, ids, torch.tensor([rows[0]["target_mask"]]), [4])[4]
    candidates = torch.zeros(1, 40, dtype=torch.bool)
    candidates[0, 4:36] = True
    torch.testing.assert_close(marked[0].stages[4][1], normalize_saliency(raw, candidates)[0, 4:36])

    base_before = {k: v.clone() for k, v in model.base_model.state_dict().items()}
    history = fit_to_saliency(model, marked, epochs=15, learning_rate=1e-2)
    assert history[-1] < history[0]
    assert all(torch.equal(v, base_before[k]) for k, v in model.base_model.state_dict().items())
    with pytest.raises(ValueError, match="epochs=0"):
        fit_to_saliency(model, marked, epochs=0)


def test_simulated_mask_keeps_the_layers_own_sliding_window():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG))
    n, window = 30, 8
    sim = MaskSimulation(model.schedule, model.pruner, n, 1.0)
    hidden = torch.randn(1, n, 64)
    sim.on_stage(2, hidden)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    sliding = ((j <= i) & (i - j < window))[None, None]
    bias = sim.attention_bias(hidden, sliding)[0, 0]
    plain = sim.attention_bias(hidden, None)[0, 0]
    kept = sim.records[-1].kept[0]
    outside = (j < i - window + 1) & (j <= i)
    assert bool((bias[outside] < -1e30).all()) and not bool((plain[outside & kept[None, :]] < -1e30).any())
    inside = sliding[0, 0] & kept[None, :]
    assert torch.equal(bias[inside], plain[inside])
    assert bool((torch.diagonal(bias) == 0).all())


@pytest.mark.parametrize("term", ["mse", "rank"])
def test_warm_start_loss_term_reaches_every_pruning_module(term):
    """The warm start uses the joint objective's ``weighted_saliency_loss``: each weighted term alone moves every module."""
    from datasets import Dataset

    from sdtp_adapter.training.marking import mark_tokens
    from sdtp_adapter.training.warm_start import fit_to_saliency

    weights = {"mse_loss_weight": 0.0, "rank_loss_weight": 0.0, f"{term}_loss_weight": 1.0}
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG, **weights))
    rows = [{"input_ids": random_ids(40)[0].tolist(), "target_mask": [i >= 30 for i in range(40)]}]
    marked = mark_tokens(model, Dataset.from_list(rows), dtype=torch.float32)
    before = {layer: module.fc1.weight.clone() for layer, module in model.pruners.items()}
    fit_to_saliency(model, marked, epochs=1)
    for layer, module in model.pruners.items():
        assert not torch.equal(module.fc1.weight, before[layer]), f"{term} loss does not move stage {layer}"
