"""The scoring service's settings: defined in `nudge.settings`, checked before anything starts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError


def test_the_service_settings_are_the_one_settings_module_s():
    import nudge.settings
    import serving.settings

    assert serving.settings.ServingSettings is nudge.settings.ServingSettings
    assert serving.settings.MAX_BATCH_LIMIT == 1_000


def test_unknown_or_no_models_are_refused_before_the_service_is_built(tmp_path):
    from serving.app import ConfigurationError, create_app
    from serving.settings import ServingSettings

    settings = ServingSettings(home=tmp_path, api_key="k", models=("churn", "nope"))
    with pytest.raises(ConfigurationError, match=r"NUDGE_MODELS: unknown model\(s\) \['nope'\]"):
        create_app(settings)
    with pytest.raises(ValidationError, match="models"):
        ServingSettings(home=tmp_path, api_key="k", models=())


def test_without_a_key_the_service_refuses_to_start(tmp_path, monkeypatch):
    from serving.app import ConfigurationError, create_app
    from serving.settings import ServingSettings

    monkeypatch.delenv("NUDGE_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="NUDGE_API_KEY"):
        create_app(ServingSettings(home=tmp_path))
