"""Tests of neuroicl_tf.convert (state-dict conversion, architecture inference) and of the
neuroicl-convert command line."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from neuroicl_tf.convert import (
    convert_state_dict,
    detect_architecture,
    load_reference,
    normalize_state_dict,
)
from neuroicl_tf.convert import neuralizer as conv_nz
from neuroicl_tf.models import ICLModel, Neuralizer
from scripts import convert as cli

FIXTURE_2D = "/work/shared/reference/fixtures/neuralizer_default_64px.npz"
FIXTURE_3D = "/work/shared/reference/fixtures/neuroverse3d_c4-64_32cube.npz"
RNG = np.random.default_rng(2)


def episode(model, b=1, length=2, size=8):
    nd, cin, cout = model.ndims, model.in_channels, model.out_channels
    s = (size,) * nd
    return {
        "target": RNG.uniform(size=(b, *s, cin)).astype(np.float32),
        "context_in": RNG.uniform(size=(b, length, *s, cin)).astype(np.float32),
        "context_out": RNG.uniform(size=(b, length, *s, cout)).astype(np.float32),
    }


def torch_like_state_dict(**config):
    """A random PyTorch-layout state dict with the reference's keys (via a source model)."""
    source = Neuralizer(**config)
    return source, conv_nz.state_dict_from_keras(source)


@pytest.fixture(scope="module")
def tiny_sd():
    return torch_like_state_dict(ndims=2, stages=3, channels=4, in_channels=2, out_channels=1)


def test_state_dict_keys_and_layout_match_the_reference_naming():
    _, sd = torch_like_state_dict()  # default: SPEC §2.6
    assert len(sd) == 106
    assert sd["enc_blocks.0.context_conv.module.layers.0.weight"].shape == (64, 64, 3, 3)
    assert sd["enc_blocks.3.combine_conv_target.module.weight"].shape == (64, 128, 1, 1)
    assert sd["upsample_blocks.2.context_conv_layer.module.weight"].shape == (64, 128, 1, 1)
    assert sd["context_embedding.module.weight"].shape == (64, 6, 1, 1)
    assert sd["output_block.block.1.weight"].shape == (3, 64, 1, 1)
    assert sd["output_block.block.0.layers.2.bias"].shape == (64,)
    assert sum(v.size for v in sd.values()) == 1_273_859


def test_roundtrip_infers_config_and_reproduces_outputs(tiny_sd):
    source, sd = tiny_sd
    assert conv_nz.config_from_state_dict(sd) == {
        "ndims": 2, "stages": 3, "channels": 4, "in_channels": 2, "out_channels": 1,
    }
    model = convert_state_dict(sd)
    assert type(model) is Neuralizer and model is not source
    for a, b in zip(model.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = episode(source)
    np.testing.assert_array_equal(model(x), source(x))


def test_3d_inference_and_existing_model():
    source, sd = torch_like_state_dict(ndims=3, stages=2, channels=3, in_channels=1,
                                       out_channels=2)
    assert sd["target_embedding.weight"].shape == (3, 1, 1, 1, 1)
    assert sd["enc_blocks.0.target_conv.layers.0.weight"].shape == (3, 3, 3, 3, 3)
    target = Neuralizer(ndims=3, stages=2, channels=3, in_channels=1, out_channels=2)
    out = convert_state_dict(sd, model=target)
    assert out is target
    x = episode(source, size=4)
    np.testing.assert_array_equal(target(x), source(x))


def test_wrappers_fixture_prefix_lightning_nesting(tiny_sd):
    source, sd = tiny_sd
    fixture_style = {f"w/{k}": v for k, v in sd.items()}
    fixture_style["target_in"] = np.zeros((1, 2, 8, 8), np.float32)  # not a weight: ignored
    lightning = {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3}
    for wrapped in (fixture_style, lightning, {f"module.{k}": v for k, v in sd.items()}):
        norm = normalize_state_dict(wrapped)
        assert sorted(norm) == sorted(sd)
        model = convert_state_dict(wrapped)
        for a, b in zip(model.get_weights(), source.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_mismatches_are_listed(tiny_sd):
    _, sd = tiny_sd
    missing = dict(sd)
    del missing["dec_blocks.1.combine_conv_context.module.bias"]
    with pytest.raises(ValueError, match=r"missing keys \(1\).*dec_blocks\.1\.combine_conv_c"):
        convert_state_dict(missing, model=Neuralizer(**conv_nz.config_from_state_dict(sd)))
    extra = dict(sd, **{"enc_blocks.0.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"unexpected keys \(1\).*enc_blocks\.0\.extra"):
        convert_state_dict(extra)
    bad = dict(sd)
    bad["enc_blocks.1.target_conv.layers.2.weight"] = np.zeros((4, 4, 3, 1), np.float32)
    with pytest.raises(ValueError, match=r"shape mismatches \(1\).*layers\.2\.weight"):
        convert_state_dict(bad)
    transposed = dict(sd)
    k = "context_embedding.module.weight"
    transposed[k] = np.zeros((3, 4, 1, 1), np.float32)  # (in, out) swapped: Cin + Cout wrong
    with pytest.raises(ValueError):
        convert_state_dict(transposed)
    with pytest.raises(ValueError, match="architecture"):
        detect_architecture({"foo.weight": np.zeros(1)})
    with pytest.raises(ValueError, match="holds a neuralizer"):
        convert_state_dict(sd, arch="neuroverse3d")
    with pytest.raises(ValueError, match="arch must be"):
        convert_state_dict(sd, arch="unet")
    with pytest.raises(TypeError):
        normalize_state_dict([1, 2])


def test_load_reference_npz_and_torch_files(tmp_path, tiny_sd):
    _, sd = tiny_sd
    path = tmp_path / "plain.npz"
    np.savez(path, **sd)
    loaded = load_reference(path)
    assert sorted(loaded) == sorted(sd)
    np.testing.assert_array_equal(loaded["target_embedding.weight"], sd["target_embedding.weight"])
    with pytest.raises(FileNotFoundError):
        load_reference(tmp_path / "none.npz")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ValueError, match="must be one of"):
        load_reference(tmp_path / "w.txt")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\0")
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(ImportError, match=r"pip install 'neuroicl_tf\[torch\]'"):
            load_reference(ckpt)
    else:
        with pytest.raises(ValueError, match="not a readable PyTorch file"):
            load_reference(ckpt)


def test_lightning_ckpt_with_torch(tmp_path, tiny_sd):
    """A real torch.save'd Lightning-style checkpoint (the 'torch' extra; skipped without it)."""
    torch = pytest.importorskip("torch")
    import argparse

    source, sd = tiny_sd
    tensors = {f"model.{k}": torch.from_numpy(np.array(v)) for k, v in sd.items()}
    plain = tmp_path / "plain.pt"
    torch.save(tensors, plain)
    lightning = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": tensors, "epoch": 7, "global_step": 1000,
                "hyper_parameters": {"args": argparse.Namespace(lr=1e-4)}}, lightning)

    for loaded in (load_reference(plain), load_reference(lightning, trust_pickle=True)):
        assert sorted(loaded) == sorted(sd)
        model = convert_state_dict(loaded)
        for a, b in zip(model.get_weights(), source.get_weights()):
            np.testing.assert_array_equal(a, b)
    # weights_only by default: the Namespace is refused with a message that names the way out.
    with pytest.raises(ValueError, match=r"first: argparse.Namespace.*trust_pickle=True"):
        load_reference(lightning)


def test_reference_fixture_2d_converts_every_tensor():
    if not os.path.exists(FIXTURE_2D):
        pytest.skip("reference fixture absent")
    sd = load_reference(FIXTURE_2D)
    assert len(sd) == 106
    model = convert_state_dict(sd)
    assert model.get_config()["channels"] == 64 and model.count_params() == 1_273_859
    back = conv_nz.state_dict_from_keras(model)
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value)


def test_dispatch_to_neuroverse3d():
    if importlib.util.find_spec("neuroicl_tf.convert.neuroverse3d") is None:
        pytest.skip("Neuroverse3D converter not present")
    if not os.path.exists(FIXTURE_3D):
        pytest.skip("reference fixture absent")
    sd = load_reference(FIXTURE_3D)
    assert detect_architecture(sd) == "neuroverse3d"
    model = convert_state_dict(sd)
    assert type(model).__name__ == "Neuroverse3D"
    assert model.count_params() == 1_108_257


# ----------------------------------------------------------------------------- command line


def test_cli_converts_and_output_loads(tmp_path, tiny_sd, capsys):
    source, sd = tiny_sd
    ref = tmp_path / "ref.npz"
    np.savez(ref, **{f"w/{k}": v for k, v in sd.items()})
    out = tmp_path / "model.h5"
    assert cli.main(["-i", str(ref), "-o", str(out)]) == 0
    assert "Neuralizer" in capsys.readouterr().out
    model = ICLModel.load(out)
    x = episode(source)
    np.testing.assert_array_equal(model(x), source(x))
    assert sorted(os.listdir(tmp_path)) == ["model.h5", "ref.npz"]


@pytest.mark.parametrize("args,message", [
    (["-i", "{tmp}/missing.npz", "-o", "{tmp}/o.h5"], "input file not found"),
    (["-i", "{tmp}/ref.txt", "-o", "{tmp}/o.h5"], "input must end in"),
    (["-i", "{tmp}/ref.npz", "-o", "{tmp}/o.keras"], "output must end in .h5"),
    (["-i", "{tmp}/ref.npz", "-o", "{tmp}/no/dir/o.h5"], "output folder does not exist"),
    (["-i", "{tmp}/ref.npz", "-o", "{tmp}/o.h5", "--arch", "unet"], "invalid choice"),
    (["-i", "{tmp}/ref.npz"], "required"),
    (["-i", "{tmp}/junk.npz", "-o", "{tmp}/o.h5"], "architecture"),
    (["-i", "{tmp}/ref.npz", "-o", "{tmp}/o.h5", "--arch", "neuroverse3d"], "holds a neural"),
])
def test_cli_errors(tmp_path, tiny_sd, capsys, args, message):
    np.savez(tmp_path / "ref.npz", **tiny_sd[1])
    np.savez(tmp_path / "junk.npz", a=np.zeros(2))
    (tmp_path / "ref.txt").write_text("x")
    code = cli.main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0]
    assert not (tmp_path / "o.h5").exists()


def test_cli_help_without_arguments_and_no_tensorflow_for_bad_input(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    code = ("import sys; from scripts import convert; rc = convert.main(sys.argv[1:]); "
            "print('TF' if 'tensorflow' in sys.modules else 'noTF'); sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0 and "usage: neuroicl-convert" in run.stdout
    assert "noTF" in run.stdout
    run = subprocess.run([sys.executable, "-c", code, "-i", str(tmp_path / "x.npz"), "-o",
                          str(tmp_path / "o.h5")], capture_output=True, text=True, env=env)
    assert run.returncode == 1 and "Error: input file not found" in run.stderr
    assert "noTF" in run.stdout
