"""The one trust policy: what loading a model may execute (stdlib only).

Every flavor asks this module before it imports code named by a model, unpickles anything,
lets a safe format (skops, the torch structure) construct a type or call a function, or reads
a format whose loader can run code. A flavor reports what a load *needs* (``Need``); the
policy (``Trust``) grants it or raises :class:`UntrustedModelError` naming what would run and
the exact option that grants it. No flavor decides on its own.

Trusted without asking: the exact names in ``TRUSTED_NAMES`` (reviewed; never a package prefix,
plain functions never by prefix) on top of what skops trusts by default. Everything else needs
explicit trust, scoped to names (``trust=["pkg.Model"]``, ``--trust-type``), to everything
(``trust=True``, ``--trust``, ``MODELPACK_TRUST=1``), or to one model's content
(``modelpack trust add URI``: a grant tied to the sha256 of its descriptor).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack.errors import UntrustedModelError

TRUST_ENV = "MODELPACK_TRUST"
LEGACY_TRUST_ENV = "MODELPACK_TRUST_PICKLE"  # deprecated alias of MODELPACK_TRUST=1
GRANTS_FILE = "trusted-models.json"

# What a need is. Names of types, functions and classes can be granted one by one; a pickle or
# shipped code runs arbitrary code, so only whole trust (or a grant for the model) covers them.
# ``module`` is an nn.Module class the torch flavor rebuilds without calling its constructor;
# ``class`` one the python flavor constructs and runs.
TYPE, FUNCTION, CLASS, MODULE = "type", "function", "class", "module"
PICKLE, CODE, FORMAT = "pickle", "code", "format"
NAMED_KINDS = frozenset({TYPE, FUNCTION, CLASS, MODULE})

# What callers pass as ``trust=``: True (everything), False (nothing), or exact names.
TrustArg = bool | Iterable[str] | None


class TrustNeededWarning(UserWarning):
    """Save tells up front when loading the model will need trust, and which option grants it."""


@dataclass(frozen=True, order=True)
class Need:
    """One thing a load would execute or construct: ``kind`` and an exact ``name``."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name}


def _exact(modules: dict[str, str]) -> set[str]:
    return {f"{m}.{n}" for m, names in modules.items() for n in names.split()}


# torch.nn building blocks, by exact class (the torch flavor imports and builds these).
_TORCH_NN = _exact(
    {
        "torch.nn.modules.activation": (
            "CELU ELU GELU GLU Hardshrink Hardsigmoid Hardswish Hardtanh LeakyReLU LogSigmoid "
            "LogSoftmax Mish MultiheadAttention PReLU RReLU ReLU ReLU6 SELU SiLU Sigmoid Softmax "
            "Softmax2d Softmin Softplus Softshrink Softsign Tanh Tanhshrink Threshold"
        ),
        "torch.nn.modules.adaptive": "AdaptiveLogSoftmaxWithLoss",
        "torch.nn.modules.batchnorm": (
            "BatchNorm1d BatchNorm2d BatchNorm3d LazyBatchNorm1d LazyBatchNorm2d LazyBatchNorm3d "
            "SyncBatchNorm"
        ),
        "torch.nn.modules.channelshuffle": "ChannelShuffle",
        "torch.nn.modules.container": (
            "ModuleDict ModuleList ParameterDict ParameterList Sequential"
        ),
        "torch.nn.modules.conv": (
            "Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d LazyConv1d "
            "LazyConv2d LazyConv3d LazyConvTranspose1d LazyConvTranspose2d LazyConvTranspose3d"
        ),
        "torch.nn.modules.distance": "CosineSimilarity PairwiseDistance",
        "torch.nn.modules.dropout": (
            "AlphaDropout Dropout Dropout1d Dropout2d Dropout3d FeatureAlphaDropout"
        ),
        "torch.nn.modules.flatten": "Flatten Unflatten",
        "torch.nn.modules.fold": "Fold Unfold",
        "torch.nn.modules.instancenorm": (
            "InstanceNorm1d InstanceNorm2d InstanceNorm3d LazyInstanceNorm1d LazyInstanceNorm2d "
            "LazyInstanceNorm3d"
        ),
        "torch.nn.modules.linear": (
            "Bilinear Identity LazyLinear Linear NonDynamicallyQuantizableLinear"
        ),
        "torch.nn.modules.normalization": (
            "CrossMapLRN2d GroupNorm LayerNorm LocalResponseNorm RMSNorm"
        ),
        "torch.nn.modules.padding": (
            "CircularPad1d CircularPad2d CircularPad3d ConstantPad1d ConstantPad2d ConstantPad3d "
            "ReflectionPad1d ReflectionPad2d ReflectionPad3d ReplicationPad1d ReplicationPad2d "
            "ReplicationPad3d ZeroPad1d ZeroPad2d ZeroPad3d"
        ),
        "torch.nn.modules.pixelshuffle": "PixelShuffle PixelUnshuffle",
        "torch.nn.modules.pooling": (
            "AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d AdaptiveMaxPool1d "
            "AdaptiveMaxPool2d AdaptiveMaxPool3d AvgPool1d AvgPool2d AvgPool3d "
            "FractionalMaxPool2d FractionalMaxPool3d LPPool1d LPPool2d LPPool3d MaxPool1d "
            "MaxPool2d MaxPool3d MaxUnpool1d MaxUnpool2d MaxUnpool3d"
        ),
        "torch.nn.modules.rnn": "GRU GRUCell LSTM LSTMCell RNN RNNCell",
        "torch.nn.modules.sparse": "Embedding EmbeddingBag",
        "torch.nn.modules.transformer": (
            "Transformer TransformerDecoder TransformerDecoderLayer TransformerEncoder "
            "TransformerEncoderLayer"
        ),
        "torch.nn.modules.upsampling": "Upsample UpsamplingBilinear2d UpsamplingNearest2d",
    }
)

# Types that skops does not trust by default but that everyday scikit-learn models hold, each
# reviewed: constructing it from data (``__new__`` + ``__setstate__``/``__dict__``) runs no code
# named by the file, opens no file and starts no process. Found by the zoo test
# (tests/flavors/test_sklearn_zoo.py) over ``sklearn.utils.all_estimators()``.
_SKLEARN_TYPES = _exact(
    {
        "numpy": "dtype",
        "functools": "partial",  # skops checks what a partial wraps (its func) on its own
        "scipy.interpolate._bsplines": "BSpline",
        "scipy.sparse._csr": "csr_matrix",
        "scipy.sparse._csc": "csc_matrix",
        "sklearn._loss.loss": (
            "AbsoluteError ExponentialLoss HalfBinomialLoss HalfGammaLoss HalfMultinomialLoss "
            "HalfPoissonLoss HalfSquaredError HalfTweedieLoss HalfTweedieLossIdentity HuberLoss "
            "PinballLoss"
        ),
        "sklearn.calibration": "_CalibratedClassifier _SigmoidCalibration",
        "sklearn.cluster._bisect_k_means": "_BisectingTree",
        "sklearn.ensemble._hist_gradient_boosting.predictor": "TreePredictor",
        "sklearn.gaussian_process._gpc": "_BinaryGaussianProcessClassifierLaplace",
        "sklearn.gaussian_process.kernels": (
            "CompoundKernel ConstantKernel DotProduct ExpSineSquared Exponentiation Matern "
            "PairwiseKernel Product RBF RationalQuadratic Sum WhiteKernel"
        ),
        "sklearn.metrics._dist_metrics": (
            "ChebyshevDistance32 ChebyshevDistance64 EuclideanDistance32 EuclideanDistance64 "
            "ManhattanDistance32 ManhattanDistance64 MinkowskiDistance32 MinkowskiDistance64"
        ),
        "sklearn.metrics._scorer": "_CurveScorer _PassthroughScorer _Scorer",
        "sklearn.model_selection._search_successive_halving": (
            "HalvingGridSearchCV HalvingRandomSearchCV"
        ),
        "sklearn.model_selection._split": "KFold StratifiedKFold",
        "sklearn.multiclass": "_ConstantPredictor",
        "sklearn.neighbors._ball_tree": "BallTree",
        "sklearn.neighbors._kd_tree": "KDTree",
        "sklearn.neural_network._stochastic_optimizers": "AdamOptimizer SGDOptimizer",
        "sklearn.tree._tree": "Tree",
        "sklearn.utils._bunch": "Bunch",
        "sklearn.utils._metadata_requests": "MetadataRequest MethodMetadataRequest",
    }
)
# Plain functions that estimators hold and call (a pooling function, a score function, an input
# check), each pure computation on arrays whatever its arguments: exact names only.
_SKLEARN_FUNCTIONS = {
    "numpy.mean",
    "numpy.median",
    "scipy._lib.array_api_compat.numpy._aliases.asarray",
    "sklearn.cluster._kmeans._kmeans_single_lloyd",
    "sklearn.cluster._kmeans._kmeans_single_elkan",
    "sklearn.feature_selection._univariate_selection.chi2",
    "sklearn.feature_selection._univariate_selection.f_classif",
    "sklearn.feature_selection._univariate_selection.f_regression",
    "sklearn.feature_selection._univariate_selection.r_regression",
    "sklearn.feature_selection._mutual_info.mutual_info_classif",
    "sklearn.feature_selection._mutual_info.mutual_info_regression",
    "sklearn.metrics._classification.accuracy_score",
    "sklearn.metrics._classification.balanced_accuracy_score",
    "sklearn.metrics._classification.f1_score",
    "sklearn.metrics._regression.r2_score",
    "sklearn.utils.validation.check_array",
}

# Functions torch modules hold as attributes (an activation), each a pure tensor operation.
_TORCH_FUNCTIONS = _exact(
    {
        "torch.nn.functional": (
            "celu elu glu hardsigmoid hardswish leaky_relu log_softmax mish normalize relu relu6 "
            "selu sigmoid silu softmax softsign tanh tanhshrink"
        ),
        "torch._C._nn": "gelu log_sigmoid softplus",
        "torch": "abs cos erf exp log_softmax relu sigmoid sin softmax tanh",
    }
)

TRUSTED_NAMES: frozenset[str] = frozenset(
    _TORCH_NN | _TORCH_FUNCTIONS | _SKLEARN_TYPES | _SKLEARN_FUNCTIONS
)
# Module classes of these libraries' model zoos: the torch flavor imports one only from a module
# under these packages, checks it is an nn.Module class, and never calls its constructor.
TRUSTED_MODULE_PACKAGES = (
    "torchvision.models.",
    "torchvision.ops.",
    "transformers.models.",
    "transformers.activations.",
    "transformers.pytorch_utils.",
    "transformers.modeling_layers.",
)


def trusted_by_default(need: Need) -> bool:
    if need.kind == MODULE:
        return need.name in _TORCH_NN or (
            need.name.startswith(TRUSTED_MODULE_PACKAGES)
            and need.name.rpartition(".")[2][:1].isupper()
        )
    if need.kind == TYPE and need.name.startswith("transformers.models."):
        return need.name.endswith("Config")  # a model's configuration: data, read from JSON
    return need.kind in (TYPE, FUNCTION) and need.name in TRUSTED_NAMES


def needing_trust(needs: Iterable[Need]) -> list[Need]:
    """The needs the reviewed list does not cover: what a load asks the caller for."""
    return [n for n in needs if not trusted_by_default(n)]


def dotted(spec: str) -> str:
    """``module:Qual.name`` (how descriptors name classes) as ``module.Qual.name``."""
    return spec.replace(":", ".", 1)


@dataclass(frozen=True)
class Trust:
    """What the caller chose to trust for one load.

    ``everything``: any need (``trust=True``); ``names``: these exact type, function and class
    names (``trust=[...]``); ``model``: the model directory, so that a grant recorded with
    ``modelpack trust add`` for exactly its content counts as trusting everything (its digest is
    computed only when a need is not granted otherwise).
    """

    everything: bool = False
    names: frozenset[str] = frozenset()
    model: Path | None = None
    _granted: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def all(cls) -> Trust:
        return cls(everything=True)

    def for_model(self, model_dir: Path) -> Trust:
        return Trust(self.everything, self.names, model_dir)

    def allows(self, need: Need) -> bool:
        if trusted_by_default(need) or self.everything:
            return True
        if need.kind in NAMED_KINDS and need.name in self.names:
            return True
        return self._model_granted()

    def _model_granted(self) -> bool:
        if self.model is None:
            return False
        if "granted" not in self._granted:  # looked up once per load, only when needed
            self._granted["granted"] = descriptor_digest(self.model) in read_grants()
        return self._granted["granted"]

    def refused(self, needs: Iterable[Need]) -> list[Need]:
        return sorted({n for n in needs if not self.allows(n)})

    def check(self, needs: Iterable[Need], *, model: str = "this model") -> None:
        """Raise :class:`UntrustedModelError` unless every need is granted."""
        refused = self.refused(needs)
        if refused:
            raise untrusted(refused, model=model)

    def allowed_names(self, needs: Iterable[Need]) -> list[str]:
        return sorted({n.name for n in needs if self.allows(n)})


def untrusted(refused: Sequence[Need], *, model: str = "this model") -> UntrustedModelError:
    """The one-line error naming what would run and the exact option that grants it."""
    shown = ", ".join(str(n) for n in refused[:5])
    more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
    if all(n.kind in NAMED_KINDS for n in refused):
        grant = f"{grant_hint(refused[:5])}, or trust=True / --trust for everything"
    else:
        grant = f"{grant_hint(refused)}, or `modelpack trust add` for it"
    return UntrustedModelError(
        f"loading {model} would run code nobody chose to trust: {shown}{more}; "
        f"load it only if you trust its source, with {grant}",
        needs=[n.to_dict() for n in refused],
    )


def legacy(trust: TrustArg, trust_pickle: bool | None) -> TrustArg:
    """``trust``, or the deprecated ``trust_pickle`` of older callers (with a warning)."""
    if trust_pickle is None:
        return trust
    warnings.warn(
        "trust_pickle= is deprecated; use trust=True (or a list of names)",
        DeprecationWarning,
        stacklevel=3,
    )
    return trust_pickle if trust is None else trust


def parse(value: Any) -> bool | list[str] | None:
    """A ``trust`` option given as text (``-C trust=...``): true/false or comma-separated names."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value).strip()
    if _truthy(text):
        return True
    if text.lower() in ("", "0", "false", "no", "off"):
        return False
    return [n.strip() for n in text.split(",") if n.strip()]


def cli_args(trust: bool | Iterable[str] | None) -> list[str]:
    """The same choice as options of a ``modelpack serve`` command (deployers, images)."""
    if trust is True:
        return ["--trust"]
    if not trust:
        return []
    return [arg for name in trust for arg in ("--trust-type", name)]


def grant_hint(needs: Sequence[Need]) -> str:
    """The option that grants ``needs``: exact names where they cover all, else everything."""
    if all(n.kind in NAMED_KINDS for n in needs):
        return (
            f"trust={[n.name for n in needs]!r} (CLI: "
            + " ".join(f"--trust-type {n.name}" for n in needs)
            + ")"
        )
    return f"trust=True (CLI: --trust, or {TRUST_ENV}=1)"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def policy(
    trust: bool | Iterable[str] | None = None,
    *,
    trust_pickle: bool | None = None,
) -> Trust:
    """The trust a caller gave: ``trust`` first, then ``MODELPACK_TRUST``; aliases last.

    ``trust``: ``True`` trusts everything, ``False`` nothing (whatever the environment), a list
    trusts those exact names. ``MODELPACK_TRUST`` is ``1``/``true`` for everything or a comma
    separated list of names. ``trust_pickle`` and ``MODELPACK_TRUST_PICKLE`` are the deprecated
    spellings of ``trust=True``.
    """
    trust = legacy(trust, trust_pickle)
    if isinstance(trust, bool):
        return Trust(everything=trust)
    if trust is not None:
        if isinstance(trust, str):
            trust = [trust]
        return Trust(names=frozenset(dotted(str(n)) for n in trust))
    env = os.environ.get(TRUST_ENV, "").strip()
    if env:
        if _truthy(env):
            return Trust(everything=True)
        if env.lower() in ("0", "false", "no", "off"):
            return Trust()
        return Trust(names=frozenset(dotted(n.strip()) for n in env.split(",") if n.strip()))
    return Trust(everything=_truthy(os.environ.get(LEGACY_TRUST_ENV)))


# -- per-model grants -------------------------------------------------------------------------


def descriptor_digest(model_dir: Path) -> str:
    """The model's content digest: the sha256 of its descriptor, whose manifest covers its files."""
    return hashlib.sha256((Path(model_dir) / "modelpack.yaml").read_bytes()).hexdigest()


def _home() -> Path:
    return Path(os.environ.get("MODELPACK_HOME") or Path.home() / ".modelpack").expanduser()


def grants_path() -> Path:
    return _home() / GRANTS_FILE


def read_grants() -> dict[str, dict[str, Any]]:
    """Digest -> what was recorded when the grant was added (uri, model_id, when)."""
    try:
        data = json.loads(grants_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    grants = data.get("grants") if isinstance(data, dict) else None
    return {str(k): dict(v) for k, v in grants.items()} if isinstance(grants, dict) else {}


def _write_grants(grants: Mapping[str, Mapping[str, Any]]) -> None:
    path = grants_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"grants": grants}, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def add_grant(digest: str, *, uri: str, model_id: str, needs: Sequence[Need]) -> None:
    grants = read_grants()
    grants[digest] = {
        "uri": uri,
        "model_id": model_id,
        "needs": [str(n) for n in needs],
        "granted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_grants(grants)


def remove_grant(digest: str) -> bool:
    grants = read_grants()
    if grants.pop(digest, None) is None:
        return False
    _write_grants(grants)
    return True
