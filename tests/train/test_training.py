"""``posgen train`` and its rope types: the spec of the reference baselines (tiny models, CPU)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from posgen import write_dataset  # noqa: E402
from posgen.encodings.builtin import rope_parameters  # noqa: E402
from posgen.encodings.model import use_frequencies  # noqa: E402
from posgen.spec import default_benchmark  # noqa: E402
from posgen.train import FILES, PREDICTIONS  # noqa: E402
from posgen.train.config import preset  # noqa: E402
from posgen.train.job import train_runs  # noqa: E402
from posgen.train.trainer import RunData, lm_tensors, predict  # noqa: E402

L, L_TEST, HEAD_DIM = 64, 256, 16
TINY = {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64, "batch_size": 32}
TINY_FLAGS = ["--layers", "1", "--hidden", "32", "--heads", "2", "--intermediate", "64"]


# --- the authors' formulas, written out independently of posgen.encodings ---------------
def authors_rope(dim: int, base: float = 10_000.0) -> np.ndarray:
    """theta_i = base^(-2i/d)."""
    return base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)


def authors_resonance(theta: np.ndarray) -> np.ndarray:
    """Resonance RoPE: theta_i = 2 pi / round(2 pi / theta_i), every dimension."""
    return 2 * math.pi / np.round(2 * math.pi / theta)


def authors_yarn(dim: int, train_length: int, test_length: int, resonance: bool = False):
    """YaRN as in the authors' POSGEN code: s = (L'+1)/(L+1), ramp over L'+1, beta 2 and 1;
    ``resonance``: Resonance RoPE's rounding of the result."""
    scale, context, base = (test_length + 1) / (train_length + 1), test_length + 1, 10_000.0

    def correction_dim(rotations: float) -> float:
        return dim * math.log(context / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(2)), 0)
    high = min(math.ceil(correction_dim(1)), dim - 1)
    ramp = np.clip((np.arange(dim // 2) - low) / ((high - low) or 0.001), 0, 1)
    theta = authors_rope(dim)
    extrapolate = 1 - ramp
    frequencies = theta / scale * (1 - extrapolate) + theta * extrapolate
    if resonance:
        frequencies = authors_resonance(frequencies)
    return frequencies, 0.1 * math.log(scale) + 1.0


def tiny_model(pe: str, evaluation: bool) -> LlamaForCausalLM:
    size = {"hidden_size": 2 * HEAD_DIM, "intermediate_size": 32, "num_hidden_layers": 1}
    heads = {"num_attention_heads": 2, "num_key_value_heads": 2}
    rope = rope_parameters(pe, L, L_TEST, evaluation=evaluation)
    config = LlamaConfig(
        vocab_size=18, **size, **heads, max_position_embeddings=L_TEST + 1, rope_parameters=rope
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def frequencies(model: LlamaForCausalLM) -> tuple[np.ndarray, float]:
    rotary = model.model.rotary_emb
    return rotary.inv_freq.double().numpy(), rotary.attention_scaling


@pytest.mark.parametrize(
    ("pe", "expected"),
    [
        ("rope", lambda: (authors_rope(HEAD_DIM), 1.0)),
        ("resonance", lambda: (authors_resonance(authors_rope(HEAD_DIM)), 1.0)),
        ("yarn", lambda: authors_yarn(HEAD_DIM, L, L_TEST)),
        ("resonance_yarn", lambda: authors_yarn(HEAD_DIM, L, L_TEST, resonance=True)),
    ],
)
def test_evaluation_frequencies_match_an_independent_implementation_of_the_authors(pe, expected):
    inv_freq, scaling = frequencies(tiny_model(pe, evaluation=True))
    want, want_scaling = expected()
    np.testing.assert_allclose(inv_freq, want, rtol=1e-5)
    assert scaling == pytest.approx(want_scaling)


@pytest.mark.parametrize(("pe", "trains_as"), [("yarn", "rope"), ("resonance_yarn", "resonance")])
def test_yarn_variants_train_unscaled_and_switch_to_evaluation_changing_only_the_frequencies(
    pe, trains_as
):
    model = tiny_model(pe, evaluation=False)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    old = frequencies(model)
    np.testing.assert_array_equal(old[0], frequencies(tiny_model(trains_as, False))[0])
    use_frequencies(model, rope_parameters(pe, L, L_TEST, evaluation=True))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert [name for name in before if not torch.equal(before[name], after[name])] == []
    new = frequencies(model)
    assert not np.array_equal(old[0], new[0])
    assert old[1] == 1.0
    assert new[1] > old[1]
    np.testing.assert_array_equal(new[0], frequencies(tiny_model(pe, True))[0])


@pytest.mark.parametrize("pe", ["resonance", "resonance_yarn"])
def test_resonance_rope_types_survive_reinitialisation_and_save_load(pe, tmp_path):
    model = tiny_model(pe, evaluation=True)
    want = frequencies(model)
    model.model.rotary_emb.inv_freq.zero_()
    model._init_weights(model.model.rotary_emb)  # what transformers runs on (re-)initialisation
    np.testing.assert_array_equal(frequencies(model)[0], want[0])
    model.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.rope_parameters["rope_type"] == pe
    np.testing.assert_array_equal(frequencies(loaded)[0], want[0])
    assert frequencies(loaded)[1] == want[1]


# --- training ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train") / "ds"
    spec = default_benchmark(("recursive",), train_size=192, val_size=24, test_size=16)
    write_dataset(spec, root)
    return root


def test_validation_on_rows_cut_to_L_gives_the_same_id_predictions(data):
    run_data = RunData.load(data, "recursive")
    model = tiny_model("yarn", evaluation=True)
    full = predict(model, lm_tensors(run_data.test)["input_ids"], 8, torch.device("cpu"), 17)
    cut = predict(model, lm_tensors(run_data.test, length=L)["input_ids"], 8, "cpu", 17)
    np.testing.assert_array_equal(full[:, :L], cut)
    assert run_data.validation.tokens.shape[1] == L


def test_pes_with_different_training_frequencies_cannot_share_a_training(data, tmp_path):
    with pytest.raises(ValueError, match="do not share"):
        train_runs(data, "recursive", ["rope", "resonance"], preset("cpu"), 1, [], "cpu")
    assert list(tmp_path.iterdir()) == []


def test_smoke_training_loss_falls_and_predictions_score_like_the_run_report(cli, data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--pe", "resonance_yarn", "--seed", "3"]
    args += [*TINY_FLAGS, "--epochs", "6", "--lr", "1e-2", "--out", str(out), "-q"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [line["train_loss"] for line in log]
    assert not any(key.startswith("far_reliance") for key in log[0])  # without probe_every
    assert len(losses) == 6
    assert losses[-1] < 0.99 * losses[0]
    assert losses[-1] == min(losses)
    record = json.loads((out / "results.json").read_text())
    assert record["spec"]["task"] == "recursive"
    assert record["versions"]["torch"]
    assert record["seed"] == 3
    rope = record["position_encoding"]["rope_parameters"]
    assert rope["evaluation"]["rope_type"] == "resonance_yarn"
    scored = cli("score", "--data", data, "--predictions", out / PREDICTIONS, "--json", "-")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout) == record["scores"]


def test_posgen_and_its_help_never_import_torch_and_train_without_it_is_one_error_line(
    data, tmp_path
):
    script = (
        "import sys, contextlib, io\n"
        "import posgen, posgen.cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    posgen.cli.main(['-h'])\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    posgen.cli.main(['train', '-h'])\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules), flush=True)\n"
        "sys.modules['torch'] = None\n"
        f"posgen.cli.main(['train', '--data', {str(data)!r}, '--pe', 'rope', '--out', "
        f"{str(tmp_path / 'r')!r}])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: training needs the train extra: pip install 'posgen[train]'"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_train_extra_that_is_installed_but_cannot_load_is_exit_1_without_the_install_hint(
    assert_clean_error, cli, data, tmp_path, monkeypatch
):
    """As under ``ulimit -v``: torch's shared library fails to map."""
    import builtins

    real = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("libtorch_cpu.so: failed to map segment from shared object")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)
    result = cli("train", "--data", data, "--pe", "rope", "--out", tmp_path / "r")
    line = assert_clean_error(result, 1, "installed but could not be loaded", "libtorch_cpu.so")
    assert "pip install" not in line
    assert list(tmp_path.iterdir()) == []


def test_predictions_never_name_bos_even_when_its_logit_is_largest():
    class BosLover(torch.nn.Module):
        def forward(self, input_ids):
            logits = torch.zeros(*input_ids.shape, 18)
            logits[..., 17] = 10.0  # BOS (id m = 17)
            logits[..., 5] = 1.0
            return type("Out", (), {"logits": logits})()

    predictions = predict(BosLover(), torch.zeros((2, 6), dtype=torch.long), 1, "cpu", 17)
    assert predictions.tolist() == [[5] * 5] * 2


def test_probe_every_logs_far_reliance_per_epoch_and_the_kept_epoch_matches_the_run(
    tiny_training_dataset, tmp_path
):
    out = tmp_path / "run"
    config = preset("cpu", **TINY, epochs=3, probe_every=1)
    train_runs(tiny_training_dataset, "cot", ["rope"], config, 5, [out], "cpu")
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in log] == [1, 2, 3]
    assert all(0 <= line["far_reliance_id"] <= 1 for line in log)
    assert all(0 <= line["far_reliance_ood"] <= 1 for line in log)
    record = json.loads((out / "results.json").read_text())
    kept = log[record["best_epoch"] - 1]
    # the kept weights are the weights of that epoch: the same probe predictions
    assert kept["far_reliance_id"] == record["probe_scores"]["id"]["far_reliance"]
    assert kept["far_reliance_ood"] == record["probe_scores"]["ood"]["far_reliance"]


def test_question_ids_move_only_the_question_tokens_to_ids_of_their_own(tiny_training_dataset):
    run_data = RunData.load(tiny_training_dataset, "cot")
    spec = run_data.train.spec
    plain = lm_tensors(run_data.train, rows=slice(0, 4))
    tagged = lm_tensors(run_data.train, rows=slice(0, 4), question_ids=True)
    question = slice(1, 1 + spec.far)  # after BOS: x_0 .. x_{j-1}
    assert (tagged["input_ids"][:, question] == plain["input_ids"][:, question] + 18).all()
    assert (tagged["input_ids"][:, 1 + spec.far :] == plain["input_ids"][:, 1 + spec.far :]).all()
    assert (tagged["input_ids"][:, 0] == plain["input_ids"][:, 0]).all()
    assert (tagged["labels"] == plain["labels"]).all()


def test_a_question_ids_run_trains_a_wider_vocabulary_and_scores_its_predictions(
    train_tiny, tmp_path
):
    out = tmp_path / "run"
    result = train_tiny("rope", out, "--question-ids", "--save-model")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["train"]["question_ids"] is True
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["vocab_size"] == 17 + 1 + 17
