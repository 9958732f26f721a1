"""Typed trainer configuration: Trainer `custom_config` dicts -> validated dataclasses.

Every key has a default; unknown keys, wrong types and out-of-range values raise a
`ValueError` that names the key and says what is accepted. Seeds live here.
"""
import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar

# Ranking heads: head name -> label key in trainer/features.py. A new head (e.g. rating) is
# one more entry here plus its weights below.
RANKING_HEADS = {"click": "clicked", "purchase": "purchased"}

T = TypeVar("T", bound="_Config")


@dataclasses.dataclass(frozen=True)
class _Config:
    """Fields shared by the retrieval and ranking trainers."""

    embedding_dim: int = 64          # width of id embeddings and tower outputs
    hidden_units: Tuple[int, ...] = (128,)  # dense layers after the concatenated features
    epochs: int = 5                  # used only when TrainArgs.num_steps is not set
    batch_size: int = 256
    learning_rate: float = 0.005     # Adam; 0 leaves the model at its (seeded) initialisation
    seed: int = 42                   # weights, shuffling
    shuffle_buffer: int = 10_000
    text_buckets: int = 4096         # hashed-token buckets of the bag-of-words text parts
    use_user_id: bool = True
    use_history: bool = True
    use_item_id: bool = True
    use_item_features: bool = True   # brand, category, top_category, price, in_stock
    use_text: bool = True            # query text (query side), title (item side)
    degrade: bool = False            # train nothing (learning rate 0): a deliberately bad model

    @property
    def effective_learning_rate(self) -> float:
        return 0.0 if self.degrade else self.learning_rate

    @classmethod
    def from_custom_config(cls: Type[T], custom_config: Optional[Mapping[str, Any]]) -> T:
        """Builds the config from a Trainer `custom_config` (None or {} -> all defaults)."""
        given = dict(custom_config or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown custom_config key(s) {unknown}; "
                f"known keys: {sorted(fields)}")
        values = {}
        for name, value in given.items():
            values[name] = _coerce(cls.__name__, name, value, fields[name].default)
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        name = type(self).__name__
        for key in ("embedding_dim", "epochs", "batch_size", "shuffle_buffer", "text_buckets"):
            if getattr(self, key) < 1:
                raise ValueError(f"{name}.{key} must be >= 1, got {getattr(self, key)}")
        if any(units < 1 for units in self.hidden_units):
            raise ValueError(f"{name}.hidden_units must be positive, got {self.hidden_units}")
        if self.learning_rate < 0:
            raise ValueError(f"{name}.learning_rate must be >= 0, got {self.learning_rate}")


@dataclasses.dataclass(frozen=True)
class RetrievalConfig(_Config):
    """Two-tower retrieval trainer (trainer.retrieval.run_fn)."""

    temperature: float = 0.1         # softmax temperature over cosine similarities
    top_k: int = 100                 # K of the exported top_k / eval_hit_at_k signatures
    eval_ks: Tuple[int, ...] = (10, 50, 100)  # recall@K reported in metrics.json
    remove_accidental_hits: bool = True

    def validate(self) -> None:
        super().validate()
        if self.temperature <= 0:
            raise ValueError(f"RetrievalConfig.temperature must be > 0, got {self.temperature}")
        if self.top_k < 1 or any(k < 1 for k in self.eval_ks) or not self.eval_ks:
            raise ValueError("RetrievalConfig.top_k and eval_ks must be positive, got "
                             f"top_k={self.top_k}, eval_ks={self.eval_ks}")
        if not (self.use_user_id or self.use_history or self.use_text):
            raise ValueError("RetrievalConfig: the query tower needs at least one of "
                             "use_user_id, use_history, use_text")
        if not (self.use_item_id or self.use_item_features or self.use_text):
            raise ValueError("RetrievalConfig: the candidate tower needs at least one of "
                             "use_item_id, use_item_features, use_text")


@dataclasses.dataclass(frozen=True)
class RankingConfig(_Config):
    """Multi-task ranking trainer (trainer.ranking.run_fn)."""

    embedding_dim: int = 32
    hidden_units: Tuple[int, ...] = (128, 64)
    use_text: bool = True            # query words matched in the item text (QueryMatch)
    # L2 on the embedding tables (ids memorise impressions without it: measured on the sample
    # shop, eval click AUC 0.68 without, 0.72-0.74 with 3e-5..3e-4).
    embedding_l2: float = 3e-4
    # Per-head weight of the training loss and of the exported `score`.
    loss_weights: Tuple[Tuple[str, float], ...] = (("click", 1.0), ("purchase", 1.0))
    score_weights: Tuple[Tuple[str, float], ...] = (("click", 1.0), ("purchase", 1.0))

    def to_dict(self) -> Dict[str, Any]:
        values = super().to_dict()
        values.update(loss_weights=self.loss_weight, score_weights=self.score_weight)
        return values

    @property
    def loss_weight(self) -> Dict[str, float]:
        return dict(self.loss_weights)

    @property
    def score_weight(self) -> Dict[str, float]:
        return dict(self.score_weights)

    def validate(self) -> None:
        super().validate()
        if self.embedding_l2 < 0:
            raise ValueError(f"RankingConfig.embedding_l2 must be >= 0, got {self.embedding_l2}")
        for key in ("loss_weights", "score_weights"):
            weights = dict(getattr(self, key))
            if set(weights) != set(RANKING_HEADS):
                raise ValueError(f"RankingConfig.{key} must give a weight for exactly the heads "
                                 f"{sorted(RANKING_HEADS)}, got {sorted(weights)}")
            if any(w < 0 for w in weights.values()):
                raise ValueError(f"RankingConfig.{key} must be >= 0, got {weights}")


def _coerce(cls_name: str, key: str, value: Any, default: Any) -> Any:
    """Converts a JSON-ish value to the type of the field's default, or raises."""
    where = f"{cls_name}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true/false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, tuple) and default and isinstance(default[0], tuple):
        # name -> weight mapping, stored as sorted pairs to keep the dataclass hashable
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a mapping of head name to weight, got {value!r}")
        return tuple(sorted(
            (str(k), _coerce(cls_name, f"{key}[{k}]", v, 0.0)) for k, v in value.items()))
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list of integers, got {value!r}")
        return tuple(_coerce(cls_name, f"{key}[{i}]", v, 0) for i, v in enumerate(value))
    raise TypeError(f"{where}: unsupported config field type {type(default)}")
