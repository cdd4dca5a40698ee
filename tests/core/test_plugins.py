"""The plugin contracts: hooks are checked by signature, as pluggy checks implementations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelpack
from modelpack import plugins
from modelpack.errors import PluginError
from modelpack.plugins import FALLBACK, SPECIFIC


class _Flavor:
    name = "mine"

    def accepts(self, obj: Any) -> bool:
        return False

    def requirements(self, config: Any) -> list[str]:
        return []

    def save(self, obj: Any, path: Path, *, level: int = 1) -> dict[str, Any]:
        return {}

    def load(self, path: Path, config: Any, options: Any) -> Any:
        return None

    def predictor(self, path: Path, config: Any, options: Any) -> Any:
        return None


def test_a_flavor_with_its_own_keyword_options_satisfies_the_contract() -> None:
    plugins.check_plugin("flavor", _Flavor(), label="mine")


def test_a_hook_that_requires_an_argument_the_core_never_passes_is_refused() -> None:
    class NeedsMore(_Flavor):
        def predictor(self, path: Path, config: Any, options: Any, extra: Any) -> Any:  # type: ignore[override]
            return None

    with pytest.raises(PluginError, match=r"predictor\(\) requires extra"):
        plugins.check_plugin("flavor", NeedsMore(), label="'mine'")


def test_a_hook_that_takes_fewer_positional_arguments_is_refused() -> None:
    class TooFew(_Flavor):
        def load(self, path: Path) -> Any:  # type: ignore[override]
            return None

    with pytest.raises(PluginError, match=r"'mine'.*load\(\) takes 1 positional"):
        plugins.check_plugin("flavor", TooFew(), label="'mine'")


def test_save_must_take_the_object_and_the_path() -> None:
    class NoPath(_Flavor):
        def save(self, obj: Any) -> dict[str, Any]:  # type: ignore[override]
            return {}

    with pytest.raises(PluginError, match=r"save\(\) takes 1 positional"):
        plugins.check_plugin("flavor", NoPath(), label="'mine'")


def test_an_optional_capability_is_checked_when_present() -> None:
    class BadTrust(_Flavor):
        def trust_needs(self, path: Path) -> list[Any]:
            return []

    with pytest.raises(PluginError, match=r"trust_needs\(\) takes 1 positional"):
        plugins.check_plugin("flavor", BadTrust(), label="'mine'")


def test_a_server_without_run_is_refused() -> None:
    class AppOnly:
        name = "apponly"

        def app(self, predictor: Any, signature: Any, **options: Any) -> Any:
            return None

    with pytest.raises(PluginError, match="missing run"):
        plugins.check_plugin("server", AppOnly(), label="'apponly'")


def test_every_builtin_plugin_satisfies_its_contract() -> None:
    for kind in ("flavor", "server", "deployer"):
        for name in plugins.names(kind):
            plugins.get_plugin(kind, name)  # raises PluginError otherwise


def test_priority_orders_flavors_and_fallback_is_the_old_spelling() -> None:
    class Old(_Flavor):
        fallback = True

    class Specific(_Flavor):
        priority = SPECIFIC

    assert plugins.priority(Old()) == FALLBACK
    assert plugins.priority(Specific()) == SPECIFIC
    assert plugins.priority(_Flavor()) == plugins.DEFAULT_PRIORITY
    assert plugins.priority(plugins.flavor("python")) == FALLBACK


def test_params_reach_only_a_predict_that_declares_them() -> None:
    class Plain:
        def predict(self, data: Any) -> Any:
            return data

    class WithParams:
        def predict(self, data: Any, params: Any = None) -> Any:
            return data

    class Open:
        def predict(self, data: Any, **kwargs: Any) -> Any:
            return data

    assert not plugins.takes_params(Plain())  # type: ignore[arg-type]
    assert plugins.takes_params(WithParams())
    assert plugins.takes_params(Open())  # type: ignore[arg-type]


def test_the_library_object_is_unwrapped_through_has_native(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    x = np.arange(8, dtype=np.float64).reshape(4, 2)
    estimator = LinearRegression().fit(x, x.sum(axis=1))
    path = modelpack.save(estimator, tmp_path / "m", input_example=x)
    model = modelpack.load(path)
    assert isinstance(model.predictor, plugins.HasNative)
    assert type(model.unwrap()) is LinearRegression


def test_the_http_server_refuses_an_option_it_does_not_know(tmp_path: Path) -> None:
    from modelpack.errors import InvalidInputError

    server = plugins.server("http")
    with pytest.raises(InvalidInputError, match=r"no option 'max_batch'.*max_batch_size"):
        server.app_for_uri(str(tmp_path), max_batch=4)  # type: ignore[attr-defined]

    class Echo:
        def predict(self, data: Any, params: Any = None) -> Any:
            return data

    with pytest.raises(InvalidInputError, match=r"no option 'max_batch'"):
        server.app(Echo(), None, max_batch=4)
    # drain is run's own (a process that drains), not an option of an app.
    with pytest.raises(InvalidInputError, match=r"no option 'drain'"):
        server.app(Echo(), None, drain=1.0)
