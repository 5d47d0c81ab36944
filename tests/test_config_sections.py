"""Configuration shape: one source of defaults, the `mask` section with the reference's flat
keys mapped onto it, and enums for closed sets."""
import pytest
import yaml

from engine.config import CONFIG_DIR, IMAGE_TYPES, MASK_MODES, PROFILES, Config, ConfigError, load_config
from engine.mask import Masker
from kernels.draw import DRAW_MODES


def _leaves(data: dict, prefix=()):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def _default(path):
    value = Config()
    for key in path:
        value = getattr(value, key)
    return value


def _same(a, b):
    norm = (lambda v: tuple(v) if isinstance(v, list) else v)
    return norm(a) == norm(b)


# --- one source of defaults --------------------------------------------------------------------
def test_the_model_is_the_one_source_of_defaults():
    """The shipped profiles hold only what differs from the model's defaults: a default written
    in a profile too would be a second source that can drift."""
    assert yaml.safe_load((CONFIG_DIR / "default.yml").read_text(encoding="utf-8")) is None   # comments only
    for name in PROFILES:
        data = yaml.safe_load((CONFIG_DIR / f"{name}.yml").read_text(encoding="utf-8")) or {}
        for path, value in _leaves(data):
            assert not _same(value, _default(path)), f"{name}.yml repeats the default of {'.'.join(path)}"
    assert load_config()[0] == Config()


def test_every_shipped_profile_key_is_a_config_key():
    for name in PROFILES:
        data = yaml.safe_load((CONFIG_DIR / f"{name}.yml").read_text(encoding="utf-8")) or {}
        for path, _ in _leaves(data):
            _default(path)                                  # AttributeError for a key the model lacks


# --- the mask section and the reference's flat keys --------------------------------------------
@pytest.mark.parametrize("flat,mode", [
    ({}, "normalized_gray_blur"),
    ({"blur": 15, "gray_blur": True, "normalized_gray_blur": True}, "normalized_gray_blur"),
    ({"gray_blur": False}, "blur"),
    ({"blur": 30, "gray_blur": False, "normalized_gray_blur": True}, "blur"),
    ({"normalized_gray_blur": False}, "gray_blur"),
    ({"blur": None}, "fill"),
    ({"blur": None, "gray_blur": False}, "fill"),              # the reference: null blur always fills
    ({"blur": 40}, "normalized_gray_blur"),                    # a kernel alone does not choose the mode
])
def test_reference_flat_keys_select_the_reference_mode(flat, mode):
    assert Config(**flat).mask.mode == mode
    assert Masker(Config(**flat)).mode == mode


def test_reference_flat_keys_map_onto_the_section(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("blur: 30\nmask_color: [1, 2, 3]\nmask_dilation_pixels: 7\ngray_blur: false\n")
    cfg, _ = load_config(f)
    assert (cfg.mask.mode, cfg.mask.blur, cfg.mask.color, cfg.mask.dilation_pixels) == ("blur", 30, (1, 2, 3), 7)
    assert cfg.mask == Config(mask={"mode": "blur", "blur": 30, "color": [1, 2, 3], "dilation_pixels": 7}).mask
    assert not hasattr(cfg, "gray_blur") and not hasattr(cfg, "blur")          # one name per setting


def test_the_section_alone_and_agreeing_flat_keys_are_accepted(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("mask:\n  mode: pixelate\n  blur: 40\n")
    assert load_config(f)[0].mask.mode == "pixelate"
    f.write_text("blur: 40\ngray_blur: false\nmask:\n  mode: blur\n  blur: 40\n")
    assert load_config(f)[0].mask.blur == 40
    # Earlier versions' default.yml wrote `mode: null` (= let the flat keys decide).
    f.write_text("blur: null\nmask:\n  mode: null\n  min_kernel_fraction: 0.5\n")
    assert load_config(f)[0].mask.mode == "fill"


@pytest.mark.parametrize("text,key,flat", [
    ("gray_blur: false\nmask: {mode: pixelate}\n", "mask.mode", "gray_blur"),
    ("blur: null\nmask: {mode: blur}\n", "mask.mode", "blur"),
    ("blur: 20\nmask: {blur: 30}\n", "mask.blur", "blur"),
    ("mask_color: [1, 2, 3]\nmask: {color: [3, 2, 1]}\n", "mask.color", "mask_color"),
    ("mask_dilation_pixels: 2\nmask: {dilation_pixels: 3}\n", "mask.dilation_pixels", "mask_dilation_pixels"),
])
def test_flat_key_disagreeing_with_the_section_is_an_error(tmp_path, text, key, flat):
    f = tmp_path / "c.yml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert str(f) in msg and f"`{key}`" in msg and f"`{flat}`" in msg and "not both" in msg


def test_a_later_source_overrides_an_earlier_one_across_the_two_spellings(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("gray_blur: false\n")
    assert load_config(f, overrides={"mask": {"mode": "pixelate"}})[0].mask.mode == "pixelate"
    f.write_text("mask: {mode: pixelate}\n")
    assert load_config(f, overrides={"blur": None})[0].mask.mode == "fill"


def test_mask_modes_are_the_kernels_draw_modes(tmp_path):
    assert MASK_MODES == tuple(DRAW_MODES)
    f = tmp_path / "c.yml"
    f.write_text("mask: {mode: pixelated}\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "`mask.mode`" in str(e.value) and all(repr(m) in str(e.value) for m in DRAW_MODES)


# --- enums for closed sets ---------------------------------------------------------------------
@pytest.mark.parametrize("text,value", [('image_type: "360"\n', "360"), ("image_type: 360\n", "360"),
                                        ("image_type: Planar\n", "Planar")])
def test_image_type_takes_the_reference_values(tmp_path, text, value):
    f = tmp_path / "c.yml"
    f.write_text(text)
    assert load_config(f)[0].image_type == value


@pytest.mark.parametrize("typo", ["planar", "Planr", "360 ", "equirectangular"])
def test_image_type_typo_is_an_error_listing_the_valid_values(tmp_path, typo):
    f = tmp_path / "c.yml"
    f.write_text(f"image_type: {typo!r}\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "`image_type`" in str(e.value) and all(repr(t) in str(e.value) for t in IMAGE_TYPES)


def test_sladd_config_prints_every_key_once_with_passwords_redacted(tmp_path, capsys):
    import yaml

    from engine.cli import main
    from engine.config import Config

    f = tmp_path / "c.yml"
    f.write_text('database: {url: "postgresql://u:hunter2@db/x"}\nmask: {mode: pixelate}\n')
    assert main(["config", "-k", str(f)]) == 0
    out = capsys.readouterr().out
    shown = yaml.safe_load(out)
    assert "hunter2" not in out
    assert shown["mask"]["mode"] == "pixelate" and shown["image_type"] == "Planar"
    assert set(shown) == set(Config.model_fields), "every key, and only the model's keys"


def test_faces_profile_runs_the_face_model_alone(tmp_path):
    """`--profile faces` (deface's scope): a run loads only the face model and records faces only."""
    import json

    from PIL import Image

    from engine.cli import main
    from engine.demo import paste_portrait, road_scene, sample_portrait

    cfg, _ = load_config(profile="faces")
    assert [m.card for m in cfg.models] == ["centerface-fast"]
    src = tmp_path / "in"
    src.mkdir()
    scene = road_scene(900, 1200)
    paste_portrait(scene, Image.open(sample_portrait()), 500, 300, 260)
    Image.fromarray(scene).save(src / "a.jpg", quality=92)
    assert main(["run", "-i", str(src), "-o", str(tmp_path / "out"), "--profile", "faces", "-q"]) == 0
    record = json.loads(next((tmp_path / "out").rglob("a*.json")).read_text())
    found = json.dumps(record)
    assert '"face"' in found and all(f'"{c}"' not in found for c in ("person", "car", "plate"))
