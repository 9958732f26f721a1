"""Typed trainer configuration: Trainer `custom_config` dicts -> validated dataclasses.

Every key has a default; unknown keys, wrong types and out-of-range values raise a
`ValueError` that names the key and says what is accepted. Seeds live here.
"""
import dataclasses
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar

from trainer.compression import MODES as COMPRESSION_MODES
from trainer.features import OPTIONAL_FLOAT_FEATURES

# Negatives of the retrieval softmax: the other clicked items of the batch (logQ-corrected),
# or every catalog item at every step (trainer/catalog_softmax.py).
NEGATIVES = ("in_batch", "catalog")
# Text encoder modes of the retrieval towers (trainer/text/tower.py; docs/DESIGN.md,
# "The BERT text tower in retrieval").
TEXT_MODES = ("none", "frozen", "top_layers", "full")
# History encoders of the retrieval query tower: attention pooling (trainer/layers.py
# HistoryEncoder), or self-attention (trainer/sequence.py) with a next-item objective on every
# prefix (causal, SASRec) or a masked-item objective (bidirectional, Bert4Rec).
HISTORY_ENCODERS = ("pooled", "causal", "bidirectional")
# What early stopping may watch: a retrieval_eval metric of the eval split (trainer/metrics.py).
EARLY_STOPPING_METRIC = re.compile(r"(recall|ndcg)@([1-9][0-9]*)(_history_filtered)?")
MINILM_LAYERS = 6                    # transformer layers of the pretrained MiniLM
MAX_DESCRIPTION_CHARS = 10_000       # the data contract's cap (pipeline/contract/spec.py)

# Binary ranking heads: head name -> label key in trainer/features.py (sigmoid, cross-entropy).
RANKING_HEADS = {"click": "clicked", "purchase": "purchased"}
# The rating regression head: label `rating`, trained and evaluated only where `has_rating`.
RATING_HEAD = "rating"
RATING_LABEL, RATING_MASK = "rating", "has_rating"
# Every output of the ranking model, in export order.
RANKING_OUTPUTS = tuple(RANKING_HEADS) + (RATING_HEAD,)

T = TypeVar("T", bound="_Config")

# prefix of the custom_config keys of tfx.extensions.google_cloud_ai_platform.Trainer
CLOUD_TRAINER_PREFIX = "ai_platform_"


def cache_root() -> str:
    """Where shoprec keeps what it builds once per machine (the text encoder export and its
    stored embeddings, the TFX package for Beam): $SHOPREC_CACHE_DIR, or ~/.cache/shoprec."""
    return os.environ.get("SHOPREC_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "shoprec")


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
    use_text: bool = True            # item text (retrieval: also see RetrievalConfig)
    degrade: bool = False            # train nothing (learning rate 0): a deliberately bad model
    # The training step on numbers only, as a TPU runs it (trainer/numeric_inputs.py): string
    # ops in the input pipeline, batches of one size, the step compiled with XLA
    # (jit_compile; checks on CPU what a TPU will compile). Always on under TPUStrategy.
    numeric_step: bool = False
    # Adversarial training (trainer/adversarial.py; docs/DESIGN.md, "Adversarial training and
    # DP-SGD"): the loss with the item-id and text embeddings moved `adversarial_epsilon` (L2,
    # per example) along their loss gradient is added with weight `adversarial_weight`;
    # `adversarial_steps` 1 = FGM, more = PGD steps of epsilon / steps projected to the ball.
    adversarial_epsilon: float = 0.0  # 0 = off
    adversarial_weight: float = 1.0
    adversarial_steps: int = 1
    # DP-SGD (trainer/dp.py, tensorflow-privacy's Keras optimizer): each microbatch's gradient
    # clipped to `dp_l2_norm_clip`, Gaussian noise of `dp_noise_multiplier` x clip added to
    # their sum; `dp_microbatches` per batch (0 = one per example; must divide batch_size).
    # The run reports epsilon at `dp_delta` (0 = 1 / train examples) in metrics.json.
    dp_noise_multiplier: float = 0.0  # 0 = off
    dp_l2_norm_clip: float = 1.0
    dp_microbatches: int = 0
    dp_delta: float = 0.0
    # Storage of the exported weights (trainer/compression.py; docs/DESIGN.md, "Compressed
    # exports"): "none" (float32), "float16", or "int8" (per-row / per-channel scales).
    compression: str = "none"

    @property
    def effective_learning_rate(self) -> float:
        return 0.0 if self.degrade else self.learning_rate

    @classmethod
    def from_custom_config(cls: Type[T], custom_config: Optional[Mapping[str, Any]]) -> T:
        """Builds the config from a Trainer `custom_config` (None or {} -> all defaults)."""
        # TFX's Google Cloud Trainer (Vertex AI training, docs/deploy.md) reads its own keys
        # (ai_platform_training_args, ai_platform_enable_vertex, ...) from the same
        # custom_config and passes them on to run_fn: not ours to check
        given = {key: value for key, value in dict(custom_config or {}).items()
                 if not key.startswith(CLOUD_TRAINER_PREFIX)}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown custom_config key(s) {unknown}; "
                f"known keys: {sorted(fields)}")
        values = {}
        for name, value in given.items():
            values[name] = _coerce(cls.__name__, name, value, fields[name].default,
                                   strings=fields[name].type == Tuple[str, ...])
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
        if self.compression not in COMPRESSION_MODES:
            raise ValueError(f"{name}.compression must be one of {list(COMPRESSION_MODES)}, "
                             f"got {self.compression!r}")
        self._validate_robust_training()

    @property
    def uses_adversarial(self) -> bool:
        return self.adversarial_epsilon > 0 and self.adversarial_weight > 0

    @property
    def uses_dp(self) -> bool:
        return self.dp_noise_multiplier > 0

    def _validate_robust_training(self) -> None:
        name = type(self).__name__
        if self.adversarial_epsilon < 0 or self.adversarial_weight < 0:
            raise ValueError(f"{name}.adversarial_epsilon and adversarial_weight must be >= 0, "
                             f"got {self.adversarial_epsilon}, {self.adversarial_weight}")
        if not 1 <= self.adversarial_steps <= 10:
            raise ValueError(f"{name}.adversarial_steps must be in [1, 10] (1 = FGM), got "
                             f"{self.adversarial_steps}")
        if self.dp_noise_multiplier < 0:
            raise ValueError(f"{name}.dp_noise_multiplier must be >= 0 (0 = off), got "
                             f"{self.dp_noise_multiplier}")
        if self.dp_l2_norm_clip <= 0:
            raise ValueError(f"{name}.dp_l2_norm_clip must be > 0, got {self.dp_l2_norm_clip}")
        if self.dp_microbatches < 0 or (self.dp_microbatches
                                        and self.batch_size % self.dp_microbatches):
            raise ValueError(f"{name}.dp_microbatches must be 0 (one per example) or divide "
                             f"batch_size ({self.batch_size}), got {self.dp_microbatches}")
        if not 0.0 <= self.dp_delta < 1.0:
            raise ValueError(f"{name}.dp_delta must be in [0, 1) (0 = 1 / train examples), "
                             f"got {self.dp_delta}")
        if self.uses_dp and self.uses_adversarial:
            raise ValueError(f"{name}: DP-SGD (dp_noise_multiplier) and adversarial training "
                             "(adversarial_epsilon) cannot be combined")
        if self.uses_dp and self.numeric_step:
            raise ValueError(f"{name}: DP-SGD (dp_noise_multiplier) is not available with "
                             "numeric_step (the XLA/TPU training step): tensorflow-privacy's "
                             "optimizer has not been checked under XLA")

    @property
    def dp_num_microbatches(self) -> int:
        """Microbatches per batch under DP-SGD (dp_microbatches, 0 = the batch size)."""
        return self.dp_microbatches or self.batch_size


@dataclasses.dataclass(frozen=True)
class RetrievalConfig(_Config):
    """Two-tower retrieval trainer (trainer.retrieval.run_fn).

    Text parts: `use_text` = item text (title, brand, category path) in the candidate tower,
    `use_query_text` = the search text in the query tower, `use_history_text` = the text
    embeddings of the history items (BERT modes only). `text_mode` picks the encoder: "none"
    (hashed bag of words, no pretrained model), "frozen" (MiniLM embeddings cached once per
    run), "top_layers" (only the top `text_top_layers` layers train), "full" (all train).
    `text_match` appends the text embeddings to the tower outputs so the score also holds a
    learned multiple of the text cosine (search text, else the pooled history texts, against
    the item text): outputs are then [B, embedding_dim + 384].
    `history_encoder` picks how the query tower reads the history (HISTORY_ENCODERS); the
    transformer ones take `sequence_layers` blocks of `sequence_heads` heads, and their
    auxiliary objective (trainer/sequence_objective.py) is added to the retrieval loss with
    weight `sequence_objective_weight` (0 = the encoder trains on the retrieval loss alone).
    """

    temperature: float = 0.1         # softmax temperature over cosine similarities
    negatives: str = "in_batch"      # "in_batch" | "catalog" (full softmax over the catalog)
    top_k: int = 100                 # K of the exported top_k / eval_hit_at_k signatures
    eval_ks: Tuple[int, ...] = (10, 50, 100)  # recall@K and NDCG@K reported in metrics.json
    remove_accidental_hits: bool = True   # in_batch: same item id elsewhere is no negative
    logq_correction: bool = True     # in_batch: subtract log(click share) of each candidate
    id_dropout: float = 0.2          # training: share of user ids, item ids, histories dropped
    use_query_text: bool = True
    use_history_text: bool = True
    text_match: bool = True          # score += w * cosine(query text, item text), w learned
    text_mode: str = "none"          # the pipeline's default is "frozen" (pipeline/configs.py)
    text_top_layers: int = 2         # trained layers in "top_layers" mode
    text_seq_len: int = 32           # wordpieces per text, [CLS] and [SEP] included
    # Item text = title | brand | category path, then the first `description_chars` characters
    # of the description when an item has one (0 = descriptions unused; text/cache.item_text).
    description_chars: int = 0
    text_learning_rate: float = 5e-5  # Adam on the encoder weights (top_layers, full)
    text_encoder_cache_dir: str = ""  # local dir of exported encoders; "" = default_cache_dir()
    # Read the pretrained embeddings of texts already encoded on this machine (and store the
    # new ones) beside the encoder export: trainer/text/embedding_store.py.
    reuse_text_embeddings: bool = True
    text_backbone: str = ""          # keras-hub preset dir of adapted weights; "" = pretrained
    # The candidate stage's item-to-item tables (trainer/related_items.py), fitted on the
    # train split and exported in the `related_items` signature: partners kept per item
    # (0 = no tables) and the co-occurrence window (items engaged before, per unit).
    related_items: int = 50
    cooccurrence_window: int = 3
    history_encoder: str = "pooled"  # "pooled" | "causal" | "bidirectional"
    sequence_layers: int = 2         # transformer blocks (causal, bidirectional)
    sequence_heads: int = 2          # attention heads; must divide embedding_dim
    sequence_dropout: float = 0.2
    sequence_objective_weight: float = 1.0  # next-item (causal) or masked-item loss weight
    sequence_mask_rate: float = 0.2  # bidirectional: share of real history positions masked
    # The objective's pairs come from the most recent N positions only (0: all): its softmax
    # over every [batch, N] slot costs N squared (history 50, batch 256: 2.4 s a step on 2
    # CPU cores for all 49 pairs, 0.13 s for 10); older items still feed the encoder.
    sequence_objective_positions: int = 10
    # The objective's negatives: the batch's other pair slots (logQ-corrected, like the main
    # loss's "in_batch") or every catalog item for every pair ("catalog": SASRec's full
    # softmax cross-entropy, for catalogs small enough to score whole each step).
    sequence_objective_negatives: str = "in_batch"
    # Early stopping on the eval split (trainer/early_stopping.py; 0 = off): after every epoch
    # (with TrainArgs.num_steps: every `early_stopping_every_steps` steps, 0 = one pass over
    # the clicked train units, the budget rounded up to whole checks) the eval split's
    # `early_stopping_metric` over the full catalog is measured; training stops after
    # `early_stopping_patience` checks without a better value, and the best check's weights
    # are evaluated and exported. `epochs` / num_steps become the maximum. The eval split
    # then chooses the training length: keep a validation period there, not the test one.
    early_stopping_patience: int = 0
    early_stopping_metric: str = "ndcg@10"   # (recall|ndcg)@K[_history_filtered]
    early_stopping_every_steps: int = 0

    def validate(self) -> None:
        super().validate()
        self._validate_history_encoder()
        self._validate_early_stopping()
        self._validate_dp()
        if self.temperature <= 0:
            raise ValueError(f"RetrievalConfig.temperature must be > 0, got {self.temperature}")
        if self.top_k < 1 or any(k < 1 for k in self.eval_ks) or not self.eval_ks:
            raise ValueError("RetrievalConfig.top_k and eval_ks must be positive, got "
                             f"top_k={self.top_k}, eval_ks={self.eval_ks}")
        if not (self.use_user_id or self.use_history or self.use_query_text):
            raise ValueError("RetrievalConfig: the query tower needs at least one of "
                             "use_user_id, use_history, use_query_text")
        if not (self.use_item_id or self.use_item_features or self.use_text):
            raise ValueError("RetrievalConfig: the candidate tower needs at least one of "
                             "use_item_id, use_item_features, use_text")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"RetrievalConfig.negatives must be one of {list(NEGATIVES)}, "
                             f"got {self.negatives!r}")
        if self.numeric_step and self.text_mode in ("top_layers", "full"):
            raise ValueError("RetrievalConfig.numeric_step (a TPU's training step) needs "
                             "text_mode 'none' or 'frozen': the trained encoder's step "
                             f"gathers unique texts (dynamic shapes), got {self.text_mode!r}")
        if self.negatives == "catalog" and self.text_mode in ("top_layers", "full"):
            raise ValueError("RetrievalConfig.negatives 'catalog' runs the candidate tower on "
                             "every catalog item each step: it needs text_mode 'none' or "
                             f"'frozen', got {self.text_mode!r}")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ValueError(f"RetrievalConfig.id_dropout must be in [0, 1), got {self.id_dropout}")
        if self.text_mode not in TEXT_MODES:
            raise ValueError(f"RetrievalConfig.text_mode must be one of {list(TEXT_MODES)}, "
                             f"got {self.text_mode!r}")
        if not 1 <= self.text_top_layers <= MINILM_LAYERS:
            raise ValueError(f"RetrievalConfig.text_top_layers must be in [1, {MINILM_LAYERS}], "
                             f"got {self.text_top_layers}")
        if not 2 <= self.text_seq_len <= 512:
            raise ValueError("RetrievalConfig.text_seq_len must be in [2, 512] ([CLS] and "
                             f"[SEP] included), got {self.text_seq_len}")
        _check_description_chars("RetrievalConfig", self.description_chars)
        if self.text_learning_rate < 0:
            raise ValueError("RetrievalConfig.text_learning_rate must be >= 0, got "
                             f"{self.text_learning_rate}")
        if self.related_items < 0 or self.cooccurrence_window < 1:
            raise ValueError("RetrievalConfig.related_items must be >= 0 and "
                             "cooccurrence_window >= 1, got "
                             f"{self.related_items}, {self.cooccurrence_window}")
        if "://" in self.text_encoder_cache_dir:
            raise ValueError("RetrievalConfig.text_encoder_cache_dir must be a local directory "
                             "(exports are renamed into place under a file lock), got "
                             f"{self.text_encoder_cache_dir!r}")

    def _validate_dp(self) -> None:
        """DP-SGD in retrieval: the softmax of each example takes its negatives from its own
        microbatch (per-microbatch clipping then bounds what one example changes), and nothing
        else computed from the train split may enter the trained weights or the export."""
        if not self.uses_dp:
            return
        problems = []
        if self.batch_size // self.dp_num_microbatches < 2:
            problems.append("dp_microbatches must leave >= 2 examples per microbatch (the "
                            "softmax negatives come from the example's microbatch), got "
                            f"{self.dp_microbatches} for batch_size {self.batch_size}")
        if self.negatives != "in_batch":
            problems.append("negatives must be 'in_batch'")
        if self.text_mode not in ("none", "frozen"):
            problems.append("text_mode must be 'none' or 'frozen' (one optimizer)")
        if self.uses_sequence_objective:
            problems.append("the sequence objective (sequence_objective_weight > 0) pairs "
                            "positions across the batch")
        if self.logq_correction:
            problems.append("logq_correction must be false (the click shares are train "
                            "statistics without noise)")
        if self.related_items:
            problems.append("related_items must be 0 (the item-to-item tables are train "
                            "statistics without noise)")
        if self.uses_early_stopping:
            problems.append("early_stopping_patience must be 0 (the kept weights would be "
                            "chosen on eval data without noise, and the accounted steps "
                            "are the planned ones)")
        if problems:
            raise ValueError("RetrievalConfig with dp_noise_multiplier > 0: "
                             + "; ".join(problems))

    def _validate_history_encoder(self) -> None:
        if self.history_encoder not in HISTORY_ENCODERS:
            raise ValueError("RetrievalConfig.history_encoder must be one of "
                             f"{list(HISTORY_ENCODERS)}, got {self.history_encoder!r}")
        if self.sequence_layers < 1 or self.sequence_heads < 1:
            raise ValueError("RetrievalConfig.sequence_layers and sequence_heads must be >= 1, "
                             f"got {self.sequence_layers}, {self.sequence_heads}")
        if self.history_encoder != "pooled" and self.embedding_dim % self.sequence_heads:
            raise ValueError(f"RetrievalConfig.sequence_heads ({self.sequence_heads}) must "
                             f"divide embedding_dim ({self.embedding_dim})")
        if self.history_encoder != "pooled" and not self.use_history:
            raise ValueError(f"RetrievalConfig.history_encoder {self.history_encoder!r} needs "
                             "use_history: true")
        if self.sequence_objective_positions < 0:
            raise ValueError("RetrievalConfig.sequence_objective_positions must be >= 0 "
                             f"(0 = all), got {self.sequence_objective_positions}")
        if not 0.0 <= self.sequence_dropout < 1.0:
            raise ValueError("RetrievalConfig.sequence_dropout must be in [0, 1), got "
                             f"{self.sequence_dropout}")
        if self.sequence_objective_weight < 0:
            raise ValueError("RetrievalConfig.sequence_objective_weight must be >= 0, got "
                             f"{self.sequence_objective_weight}")
        if self.sequence_objective_negatives not in NEGATIVES:
            raise ValueError("RetrievalConfig.sequence_objective_negatives must be one of "
                             f"{list(NEGATIVES)}, got {self.sequence_objective_negatives!r}")
        if not 0.0 < self.sequence_mask_rate < 1.0:
            raise ValueError("RetrievalConfig.sequence_mask_rate must be in (0, 1), got "
                             f"{self.sequence_mask_rate}")

    def _validate_early_stopping(self) -> None:
        if self.early_stopping_patience < 0 or self.early_stopping_every_steps < 0:
            raise ValueError("RetrievalConfig.early_stopping_patience and "
                             "early_stopping_every_steps must be >= 0 (0 = off / one pass "
                             f"over the train split), got {self.early_stopping_patience}, "
                             f"{self.early_stopping_every_steps}")
        if not EARLY_STOPPING_METRIC.fullmatch(self.early_stopping_metric):
            raise ValueError("RetrievalConfig.early_stopping_metric must be recall@K or "
                             "ndcg@K, optionally with '_history_filtered' (e.g. 'ndcg@10'), "
                             f"got {self.early_stopping_metric!r}")

    @property
    def uses_early_stopping(self) -> bool:
        return self.early_stopping_patience > 0

    @property
    def uses_sequence_objective(self) -> bool:
        """The transformer history encoder's auxiliary loss is on."""
        return self.history_encoder != "pooled" and self.sequence_objective_weight > 0

    @property
    def uses_catalog(self) -> bool:
        """Some loss scores every catalog item each step (the catalog split is loaded)."""
        return self.negatives == "catalog" or (
            self.uses_sequence_objective and self.sequence_objective_negatives == "catalog")

    @property
    def uses_logq(self) -> bool:
        """logQ correction applies to the sampled (in-batch) negatives only."""
        return self.logq_correction and self.negatives == "in_batch"

    @property
    def uses_bert(self) -> bool:
        """True when some text part runs through the pretrained encoder."""
        return self.text_mode != "none" and (
            self.use_text or self.use_query_text or (self.use_history and self.use_history_text))

    @property
    def uses_text_match(self) -> bool:
        """The text-match term needs item text and a query-side text (search or history).
        Off for `degrade`: the pretrained cosine alone is a fair zero-shot retriever, so an
        untrained model with it would not be the deliberately bad candidate blessing tests
        need."""
        return (self.text_match and not self.degrade and self.uses_bert and self.use_text
                and (self.use_query_text or (self.use_history and self.use_history_text)))

    @property
    def effective_text_learning_rate(self) -> float:
        return 0.0 if self.degrade else self.text_learning_rate

    def encoder_cache_dir(self) -> str:
        """`text_encoder_cache_dir`, or $SHOPREC_CACHE_DIR/text_encoder, or
        ~/.cache/shoprec/text_encoder."""
        if self.text_encoder_cache_dir:
            return self.text_encoder_cache_dir
        return os.path.join(cache_root(), "text_encoder")


@dataclasses.dataclass(frozen=True)
class RankingConfig(_Config):
    """Multi-task ranking trainer (trainer.ranking.run_fn).

    Features -> `num_cross_layers` DCN-v2 cross layers (`cross_projection_dim` > 0: low-rank
    kernels) -> deep ReLU layers `hidden_units` -> one head per output (RANKING_OUTPUTS).
    `use_text_embedding`: the frozen MiniLM embedding of the candidate's item text (projected
    to `text_projection_dim`) and its cosine with the user's history item texts (mean and max)
    as features; the encoder export comes from `text_encoder_cache_dir` ("" = the default
    cache, as for retrieval) at `text_seq_len` wordpieces.
    Weights are per output; heads not named in `loss_weights` / `score_weights` keep their
    defaults. The exported `score` is sum(score_weights[h] * output h) (rating in stars).
    """

    embedding_dim: int = 32
    hidden_units: Tuple[int, ...] = (128, 64)   # the deep layers after the cross layers
    num_cross_layers: int = 2
    cross_projection_dim: int = 0    # 0 = full-rank cross kernels
    use_text: bool = True            # query words matched in the item text (QueryMatch)
    use_text_embedding: bool = True  # frozen MiniLM item text + history-text cosines
    text_projection_dim: int = 16
    text_seq_len: int = 32
    description_chars: int = 0       # as RetrievalConfig.description_chars, for the ranker's cache
    text_encoder_cache_dir: str = ""
    reuse_text_embeddings: bool = True    # as RetrievalConfig.reuse_text_embeddings
    # Features computed outside the model (names from trainer.features.
    # OPTIONAL_FLOAT_FEATURES: earlier stages' scores such as "retrieval_score", user-candidate
    # statistics such as "history_brand_share"): each goes into the cross features and into a
    # wide term w * value on every binary head's logit. None in the shop pipeline, whose
    # impression units carry no such values (docs/DESIGN.md, "Ranking stage"); two-stage data
    # has them (the Beauty re-ranking benchmark). The exported raw-feature signatures then
    # take these inputs too.
    external_features: Tuple[str, ...] = ()
    # L2 on the embedding tables: without it the ids memorise the training impressions and
    # eval AUC falls with more steps (docs/DESIGN.md, "Models and BERT").
    embedding_l2: float = 3e-4
    # Per-output weight of the training loss and of the exported combined `score`.
    # Seeds averaged: `ensemble_size` models trained alike with seeds seed, seed + 1, ...; the
    # export's outputs are their means (each signature calls every member once).
    ensemble_size: int = 1
    loss_weights: Tuple[Tuple[str, float], ...] = (
        ("click", 1.0), ("purchase", 1.0), ("rating", 1.0))
    score_weights: Tuple[Tuple[str, float], ...] = (
        ("click", 1.0), ("purchase", 1.0), ("rating", 0.0))
    # Listwise term (docs/DESIGN.md, "Step 6: a listwise ranker"): > 0 trains on whole user
    # contexts (the two-stage rows of one context, trainer/data.make_context_dataset) and
    # adds, per binary head, this weight x the head's loss weight x a softmax cross-entropy
    # over each context's rows (the chosen item against its pool negatives) to the pointwise
    # losses. Needs the rows' `context_id` (CandidateExamples writes it); 0 = pointwise only.
    listwise_weight: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        values = super().to_dict()
        values.update(loss_weights=self.loss_weight, score_weights=self.score_weight)
        return values

    @property
    def loss_weight(self) -> Dict[str, float]:
        return self._weights("loss_weights")

    @property
    def score_weight(self) -> Dict[str, float]:
        return self._weights("score_weights")

    def _weights(self, key: str) -> Dict[str, float]:
        default = dict(next(f.default for f in dataclasses.fields(self) if f.name == key))
        default.update(dict(getattr(self, key)))
        return {head: default[head] for head in RANKING_OUTPUTS}

    def validate(self) -> None:
        super().validate()
        if self.embedding_l2 < 0:
            raise ValueError(f"RankingConfig.embedding_l2 must be >= 0, got {self.embedding_l2}")
        if not 1 <= self.ensemble_size <= 16:
            raise ValueError(f"RankingConfig.ensemble_size must be in [1, 16], got "
                             f"{self.ensemble_size}")
        if self.uses_dp and self.ensemble_size > 1:
            raise ValueError("RankingConfig: DP-SGD (dp_noise_multiplier) trains one model; "
                             "an ensemble would spend the privacy budget ensemble_size times "
                             f"(ensemble_size {self.ensemble_size})")
        if self.num_cross_layers < 0 or self.cross_projection_dim < 0:
            raise ValueError("RankingConfig.num_cross_layers and cross_projection_dim must be "
                             f">= 0, got {self.num_cross_layers}, {self.cross_projection_dim}")
        if self.text_projection_dim < 1:
            raise ValueError("RankingConfig.text_projection_dim must be >= 1, got "
                             f"{self.text_projection_dim}")
        if not 2 <= self.text_seq_len <= 512:
            raise ValueError(f"RankingConfig.text_seq_len must be in [2, 512], got "
                             f"{self.text_seq_len}")
        _check_description_chars("RankingConfig", self.description_chars)
        for key in ("loss_weights", "score_weights"):
            weights = dict(getattr(self, key))
            unknown = sorted(set(weights) - set(RANKING_OUTPUTS))
            if unknown:
                raise ValueError(f"RankingConfig.{key}: unknown head(s) {unknown}; the heads "
                                 f"are {list(RANKING_OUTPUTS)}")
            if any(w < 0 for w in weights.values()):
                raise ValueError(f"RankingConfig.{key} must be >= 0, got {weights}")
        if self.listwise_weight < 0:
            raise ValueError(f"RankingConfig.listwise_weight must be >= 0, got "
                             f"{self.listwise_weight}")
        if self.listwise_weight and (self.uses_dp or self.numeric_step):
            raise ValueError(
                "RankingConfig.listwise_weight needs whole contexts in a batch; DP-SGD "
                "(per-example losses) and numeric_step (a TPU's fixed-size batches, which "
                "split contexts) do not keep them: set listwise_weight 0 with those")
        if not any(self.loss_weight.values()):
            raise ValueError("RankingConfig.loss_weights: at least one head must be > 0")
        unknown = [f for f in self.external_features if f not in OPTIONAL_FLOAT_FEATURES]
        if unknown or len(set(self.external_features)) != len(self.external_features):
            raise ValueError(f"RankingConfig.external_features must be distinct names from "
                             f"{list(OPTIONAL_FLOAT_FEATURES)}, got {list(self.external_features)}")

    def text_config(self) -> "RetrievalConfig":
        """The text settings in the form trainer.text.tower's embedder takes (item text and
        history texts, no query text, frozen encoder)."""
        return RetrievalConfig(
            text_mode="frozen", use_text=True, use_query_text=False, use_history=True,
            use_history_text=True, text_seq_len=self.text_seq_len,
            description_chars=self.description_chars,
            text_encoder_cache_dir=self.text_encoder_cache_dir,
            reuse_text_embeddings=self.reuse_text_embeddings, seed=self.seed)


def _check_description_chars(cls_name: str, value: int) -> None:
    if not 0 <= value <= MAX_DESCRIPTION_CHARS:
        raise ValueError(f"{cls_name}.description_chars must be in [0, {MAX_DESCRIPTION_CHARS}] "
                         f"(0 = descriptions unused), got {value}")


def _coerce(cls_name: str, key: str, value: Any, default: Any, strings: bool = False) -> Any:
    """Converts a JSON-ish value to the type of the field's default, or raises. `strings`:
    the field is a tuple of strings (its default may be empty)."""
    where = f"{cls_name}.{key}"
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
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
        kind, element = ("strings", "") if strings else ("integers", 0)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list of {kind}, got {value!r}")
        return tuple(_coerce(cls_name, f"{key}[{i}]", v, element) for i, v in enumerate(value))
    raise TypeError(f"{where}: unsupported config field type {type(default)}")
