"""Configuration: reference keys and defaults, overrides, deprecations, clear errors."""
import logging

import pytest
import yaml

from engine.config import CONFIG_DIR, Config, ConfigError, load_config

# docs/reference.md §9 (default_config.yml), the values sladd must keep.
REFERENCE_DEFAULTS = {
    "data_eier": None, "fylkesnummer": None, "force_fylke": False, "image_type": "Planar", "draw_mask": True,
    "delete_input": False, "file_access_retry_seconds": 10, "file_access_timeout_seconds": 60,
    "datetime_format": "%Y-%m-%d %H.%M.%S", "log_file_name": "{datetime}_{hostname}.log", "log_level": "DEBUG",
    "application_version": "0.2", "exif_mappenavn": "Vegbilder/{relative_input_dir}", "exif_top_dir": "tilSladding",
    "remove_imagetype_filepath": False, "flip_wkt": False, "remote_json": True, "local_json": False,
    "archive_json": False, "remote_preview": False, "local_preview": False, "archive_preview": False,
    "separate_preview_directory": None, "preview_dim": (2520, 1400), "preview_center": (0.45, 0.5),
    "mask_dilation_pixels": 4, "max_num_pixels": 1000000000, "use_cutouts": False,
    "cutout_step_factor": (1500, 1300), "cutout_dim_downscale": (3, 2), "mask_color": None, "blur": 15,
    "gray_blur": True, "normalized_gray_blur": True, "uncaught_exception_email": False,
    "processing_error_email": False, "finished_email": False, "email_attach_log_file": False,
    "write_exif_to_db": False, "db_max_n_accumulated_rows": 100, "db_max_n_errors": 1000,
    "db_max_cache_size": 1000, "table_name": "VEGBILDER", "table_primary_key": "bildeid",
}
REFERENCE_360 = {"image_type": "360", "application_version": "0.1", "exif_top_dir": "TilSladding",
                 "local_json": True, "remote_preview": True, "use_cutouts": True, "uncaught_exception_email": True,
                 "processing_error_email": True, "finished_email": True, "email_attach_log_file": True}


# The reference's flat masking keys live in the `mask` section (engine/config/reference.py).
MASK_SECTION = {"blur": ("blur", 15), "mask_color": ("color", None), "mask_dilation_pixels": ("dilation_pixels", 4),
                "gray_blur": ("mode", "normalized_gray_blur"), "normalized_gray_blur": ("mode", "normalized_gray_blur")}


def _reference_value(cfg, key):
    if key in MASK_SECTION:
        return getattr(cfg.mask, MASK_SECTION[key][0])
    return getattr(cfg, key)


def _expected(key, profile=REFERENCE_DEFAULTS):
    if key in profile and key not in MASK_SECTION:
        return profile[key]
    return MASK_SECTION[key][1] if key in MASK_SECTION else REFERENCE_DEFAULTS[key]


def test_default_profile_has_reference_defaults():
    cfg, path = load_config()
    assert path == CONFIG_DIR / "default.yml"
    for key in REFERENCE_DEFAULTS:
        assert _reference_value(cfg, key) == _expected(key), key
    # The reference's default masking keys, written out, select exactly the default drawing.
    flat = {k: REFERENCE_DEFAULTS[k] for k in MASK_SECTION}
    assert Config(**flat).mask == cfg.mask


def test_360_profile_differs_only_where_reference_does():
    cfg, _ = load_config(profile="360")
    for key in {**REFERENCE_DEFAULTS, **REFERENCE_360}:
        assert _reference_value(cfg, key) == _expected(key, REFERENCE_360), key


def test_user_file_overrides_only_named_keys(tmp_path):
    f = tmp_path / "mine.yml"
    f.write_text("blur: 30\nengine:\n  writers: 4\n")
    cfg, path = load_config(f)
    assert path == f and cfg.mask.blur == 30 and cfg.engine.writers == 4
    assert cfg.engine.queue_size == 8 and cfg.mask.dilation_pixels == 4   # untouched (fix 17)


def test_user_file_with_image_type_360_picks_360_profile(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text('image_type: "360"\n')
    cfg, _ = load_config(f)
    assert cfg.use_cutouts and cfg.exif_top_dir == "TilSladding"


def test_reference_config_file_loads_with_deprecation_warnings(tmp_path, caplog):
    ref = dict(REFERENCE_DEFAULTS)
    ref.update({"force_remask": False, "lazy_paths": False, "enable_async": True, "max_num_async_workers": 2,
                "model_type": "Medium", "preview_dim": [2520, 1400], "preview_center": [0.45, 0.5],
                "cutout_step_factor": [1500, 1300], "cutout_dim_downscale": [3, 2]})
    f = tmp_path / "default_config.yml"
    f.write_text(yaml.safe_dump(ref))
    with caplog.at_level(logging.WARNING, logger="sladd"):
        cfg, _ = load_config(f)
    assert cfg.mask.blur == 15 and cfg.mask.mode == "normalized_gray_blur"
    warned = " ".join(r.getMessage() for r in caplog.records)
    for key in ("force_remask", "lazy_paths", "enable_async", "max_num_async_workers", "model_type"):
        assert f"`{key}`" in warned


def test_unknown_key_is_an_error_naming_it(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("blurr: 15\n")
    with pytest.raises(ConfigError, match=r"unknown key `blurr`"):
        load_config(f)


@pytest.mark.parametrize("text,key,fragment", [
    ("blur: -3\n", "blur", "-3"),
    ("log_level: LOUD\n", "log_level", "LOUD"),
    ("mask_color: [0, 300, 0]\n", "mask_color", "0..255"),
    ("engine:\n  device: tpu\n", "engine.device", "tpu"),
    ("force_fylke: true\n", "", "fylkesnummer"),
])
def test_invalid_values_fail_with_key_value_and_rule(tmp_path, text, key, fragment):
    f = tmp_path / "c.yml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert str(f) in msg and fragment in msg
    if key:
        assert f"`{key}`" in msg


def test_not_yaml_is_a_clear_error(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("blur: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)
