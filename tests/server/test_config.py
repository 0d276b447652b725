"""Settings: defaults, the SIE_* environment, overrides, and one `sie serve` flag per setting."""

from __future__ import annotations

import argparse
import dataclasses
import os

import pytest

from sie import DEFAULT_MODEL
from sie.server.config import MAX_HEADER_BYTES, SETTINGS, ServerConfig, env_name, max_request_bytes
from sie.server.launch import add_serve_arguments


def test_every_setting_has_a_documented_entry_and_a_flag():
    assert {field.name for field in dataclasses.fields(ServerConfig)} == set(SETTINGS)
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    flags = {option for action in parser._actions for option in action.option_strings}
    assert {setting.flag for setting in SETTINGS.values()} <= flags


def test_defaults():
    config = ServerConfig.from_env({})
    assert config.models == (DEFAULT_MODEL,) and config.port == 8080 and config.workers == 1
    assert config.api_keys == () and config.max_items == 1000 and config.max_body_bytes == 16 * 1024 * 1024


def test_environment_overrides_defaults_and_overrides_win():
    environ = {"SIE_PORT": "9001", "SIE_MODELS": "a/b, c", "SIE_API_KEYS": "k1,k2", "SIE_DTYPE": "bfloat16",
               "SIE_LOAD_ON_DEMAND": "false", "SIE_MAX_BATCH_WAIT_MS": "0.5", "SIE_MAX_BATCH_TOKENS": ""}
    config = ServerConfig.from_env(environ)
    assert config.port == 9001 and config.models == ("a/b", "c") and config.api_keys == ("k1", "k2")
    assert config.dtype == "bfloat16" and config.load_on_demand is False and config.max_batch_wait_ms == 0.5
    assert config.max_batch_tokens is None
    overridden = config.override({"port": 1, "models": "x,y", "api_keys": ["z"]})
    assert overridden.port == 1 and overridden.models == ("x", "y") and overridden.api_keys == ("z",)
    with pytest.raises(ValueError, match="unknown server setting"):
        config.override({"prot": 1})


@pytest.mark.parametrize(("name", "value"), [("port", "http"), ("dtype", "float8"), ("access_log", "maybe"),
                                             ("recipes", "Qwen/Qwen3-Reranker-0.6B"), ("recipes", "=qwen3-reranker"),
                                             ("read_timeout_s", "0"), ("write_timeout_s", "-1"),
                                             ("request_timeout_s", "nan"), ("max_queue", "0"), ("threads", "-2"),
                                             ("log_level", "bogus"), ("port", "99999"), ("port", "-5"),
                                             ("backend", "bogus"), ("device", "mps"), ("device", "cuda:x"),
                                             ("request_timeout_s", "inf"), ("write_timeout_s", "1e300"),
                                             ("max_batch_wait_ms", "-1"), ("max_batch_wait_ms", "inf"),
                                             ("malloc_trim_interval_s", "nan"), ("graceful_timeout_s", "-1"),
                                             ("max_batch_tokens", "0"), ("malloc_mmap_threshold", "-1"),
                                             ("malloc_mmap_threshold", str(2**32 + 1)),
                                             ("max_on_demand_models", "-1")])
def test_a_bad_value_names_its_variable_and_flag(name, value):
    with pytest.raises(ValueError, match=rf"{env_name(name)} \({SETTINGS[name].flag}\)"):
        ServerConfig.from_env({env_name(name): value})


def test_backend_and_log_level_are_read_in_any_case_and_blank_is_the_default():
    """As the library reads SIE_BACKEND (strip, lower case, blank for auto), so that `sie serve` and `sie rerank`
    accept the same values."""
    config = ServerConfig.from_env({"SIE_BACKEND": " TORCH", "SIE_LOG_LEVEL": "DEBUG", "SIE_DEVICE": " cuda:1 "})
    assert (config.backend, config.log_level, config.device) == ("torch", "debug", "cuda:1")
    config = ServerConfig.from_env({"SIE_BACKEND": "", "SIE_LOG_LEVEL": " ", "SIE_DEVICE": "",
                                    "SIE_LOAD_ON_DEMAND": "", "SIE_ACCESS_LOG": " "})
    assert (config.backend, config.log_level, config.device) == ("auto", "info", "auto")
    assert config.load_on_demand is True and config.access_log is False, "a blank boolean is its default too"
    # What the library and gunicorn take: devices with an index, gunicorn's levels, dtypes as torch spells them.
    config = ServerConfig.from_env({"SIE_DEVICE": "cpu:0", "SIE_LOG_LEVEL": "critical", "SIE_DTYPE": "torch.int8"})
    assert (config.device, config.log_level, config.dtype) == ("cpu:0", "critical", "int8")


def test_serve_refuses_a_bad_flag_before_starting(monkeypatch, capsys):
    from sie.server import launch

    monkeypatch.setattr(launch._Arbiter, "run", lambda self: pytest.fail("the server started"))
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("SIE_")})
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    for flags, named in ((["--log-level", "bogus"], "SIE_LOG_LEVEL (--log-level)"),
                         (["--port", "99999"], "SIE_PORT (--port)"),
                         (["--backend", "cudnn"], "SIE_BACKEND (--backend)"),
                         (["--request-timeout", "inf"], "SIE_REQUEST_TIMEOUT_S (--request-timeout)")):
        assert launch.run_serve(parser.parse_args(flags)) == 2
        assert named in capsys.readouterr().err
        os.environ.clear()


def test_a_model_named_twice_is_one_model():
    assert ServerConfig.from_env({"SIE_MODELS": "a/b,c,a/b"}).models == ("a/b", "c")


def test_the_buffer_bound_must_hold_a_largest_request():
    least = max_request_bytes(2000)
    assert least == 2000 + 2000 // 8 + 2 * MAX_HEADER_BYTES + 4  # body, its chunk framing and trailers, headers
    with pytest.raises(ValueError, match=f"max-buffered-bytes \\(2000\\) is below {least}, .* --max-body-bytes"):
        ServerConfig.from_env({"SIE_MAX_BODY_BYTES": "2000", "SIE_MAX_BUFFERED_BYTES": "2000"})
    assert ServerConfig.from_env({"SIE_MAX_BODY_BYTES": "2000", "SIE_MAX_BUFFERED_BYTES": str(least)})


def test_keys_stay_out_of_the_config_repr():
    assert "secret-key" not in repr(ServerConfig.from_env({"SIE_API_KEYS": "secret-key"}))


def test_serve_flags_reach_the_environment(monkeypatch):
    from sie.server import launch

    started = []
    monkeypatch.setattr(launch._Arbiter, "run", lambda self: started.append(self._config))
    # run_serve writes os.environ: give it a copy, without SIE_* settings, that the monkeypatch undoes.
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("SIE_")})
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--port", "9100", "--model", "m1", "--model", "m2,m3", "--api-key", "k", "--access-log",
                              "--recipe", "m2=qwen3-reranker", "--recipe", "m3=mxbai-rerank-v2"])
    assert launch.run_serve(args) == 0
    assert os.environ["SIE_PORT"] == "9100" and os.environ["SIE_MODELS"] == "m1,m2,m3"
    config = started[0]
    assert config.port == 9100 and config.models == ("m1", "m2", "m3") and config.api_keys == ("k",)
    assert config.access_log is True
    assert [config.recipe_for(model) for model in ("m1", "m2", "m3")] == [None, "qwen3-reranker", "mxbai-rerank-v2"]
