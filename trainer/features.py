"""Every feature name of the training examples, named once. Other modules import from here.

Examples are written by pipeline/components/shop_example_gen.py (one per user x session x item
"impression unit", plus one catalog example per item) and read by trainer/preprocessing.py.
"""

# --- user / context side (raw) ---
USER_ID = "user_id"                    # bytes; "" in catalog examples
HISTORY_ITEM_IDS = "history_item_ids"  # bytes[L]: engaged items strictly before the
                                       # example's timestamp, most recent first, "" padded
# L, the fixed length of HISTORY_ITEM_IDS, is a pipeline setting (PipelineConfig.history_length):
# the examples, the schema, Transform's output and the models all have that width
# (`history_length_of` reads it from a feature spec). HISTORY_LENGTH is only its default.
HISTORY_LENGTH = 10
MAX_HISTORY_LENGTH = 200
NUM_HISTORY = "num_history"            # int: how many HISTORY_ITEM_IDS are real (not padding)
QUERY = "query"                        # bytes: latest search text earlier in the session, or ""
TIMESTAMP = "timestamp"                # int: epoch seconds of the unit's first event

# --- item / candidate side (raw, from the items table) ---
ITEM_ID = "item_id"
TITLE = "title"
DESCRIPTION = "description"
BRAND = "brand"                        # "" when unknown
CATEGORY = "category"                  # full path, levels joined with " > "
TOP_CATEGORY = "top_category"          # first level of CATEGORY (slicing key)
PRICE = "price"                        # float
IN_STOCK = "in_stock"                  # int 0/1

# --- labels (outcomes of the impression unit) ---
CLICKED = "clicked"                    # int 0/1
ADDED_TO_CART = "added_to_cart"        # int 0/1
PURCHASED = "purchased"                # int 0/1
RATING = "rating"                      # float; 0.0 when no rating
HAS_RATING = "has_rating"              # int 0/1

LABEL_KEYS = (CLICKED, ADDED_TO_CART, PURCHASED, RATING, HAS_RATING)

# --- optional candidate context (raw; absent from the shop pipeline's examples) ---
# Features of the candidate for this user computed outside the model: scores from earlier
# stages or other models, and user-candidate statistics (two-stage data, e.g. the Beauty
# re-ranking benchmark); read by ranking models that name them in
# RankingConfig.external_features.
RETRIEVAL_SCORE = "retrieval_score"    # float: the retrieval model's score
TRANSITION_SCORE = "transition_score"  # float: how often the candidate followed the user's
                                       # most recent items (item-to-item transitions)
HISTORY_BRAND_SHARE = "history_brand_share"    # float: share of the history items of the
                                               # candidate's brand
LAST_ITEM_SAME_BRAND = "last_item_same_brand"  # float 0/1: the most recent history item has
                                               # the candidate's brand
TEXT_SCORE = "text_score"              # float: cosine of the candidate's text embedding with
                                       # the user's recent history texts
COOCCURRENCE_SCORE = "cooccurrence_score"  # float: how often the candidate occurred near the
                                           # user's history items (either order)
OPTIONAL_FLOAT_FEATURES = (RETRIEVAL_SCORE, TRANSITION_SCORE, HISTORY_BRAND_SHARE,
                           LAST_ITEM_SAME_BRAND, TEXT_SCORE, COOCCURRENCE_SCORE)

# Two-stage rows (pipeline/components/candidate_examples.py) also name their context and
# the source that put the candidate in the pool (strings; evaluation only, no model reads them).
CONTEXT_ID = "context_id"              # one id per user context: TFMA's query_key
CANDIDATE_SOURCE = "candidate_source"  # the source's feature name, e.g. retrieval_score
USER_SEGMENT = "user_segment"          # eval rows: the user's segment ("3"; "none"), a TFMA slice
OPTIONAL_STRING_FEATURES = (CONTEXT_ID, CANDIDATE_SOURCE, USER_SEGMENT)

STRING_FEATURES = (USER_ID, QUERY, ITEM_ID, TITLE, DESCRIPTION, BRAND, CATEGORY, TOP_CATEGORY)
INT_FEATURES = (NUM_HISTORY, TIMESTAMP, IN_STOCK, CLICKED, ADDED_TO_CART, PURCHASED, HAS_RATING)
FLOAT_FEATURES = (PRICE, RATING)


def check_history_length(value, name: str = "history_length") -> int:
    """``value`` if it is a whole number in [1, MAX_HISTORY_LENGTH], else ValueError naming
    ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 1 <= value <= MAX_HISTORY_LENGTH:
        raise ValueError(f"{name}={value!r}: must be a whole number of items in "
                         f"[1, {MAX_HISTORY_LENGTH}]")
    return value


def raw_feature_spec(history_length: int = HISTORY_LENGTH) -> dict:
    """The raw feature spec SchemaGen(infer_feature_shape=True) infers for the examples:
    every string, int and float feature [1], HISTORY_ITEM_IDS [history_length]."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    check_history_length(history_length)
    spec = {key: tf.io.FixedLenFeature([1], tf.string) for key in STRING_FEATURES}
    spec.update({key: tf.io.FixedLenFeature([1], tf.int64) for key in INT_FEATURES})
    spec.update({key: tf.io.FixedLenFeature([1], tf.float32) for key in FLOAT_FEATURES})
    spec[HISTORY_ITEM_IDS] = tf.io.FixedLenFeature([history_length], tf.string)
    return spec


def history_length_of(spec) -> int:
    """The history width L of a feature spec: a raw spec (HISTORY_ITEM_IDS [L], e.g.
    ``TFTransformOutput.raw_feature_spec()``) or a transformed one (its index feature
    ``idx(HISTORY_ITEM_IDS)`` [L]); ValueError when the spec has no fixed-width history."""
    for key in (idx(HISTORY_ITEM_IDS), HISTORY_ITEM_IDS):
        feature = spec.get(key)
        shape = getattr(feature, "shape", None)
        if shape is not None and len(shape) == 1 and int(shape[0]) > 0:
            return int(shape[0])
    found = {k: spec[k] for k in (HISTORY_ITEM_IDS, idx(HISTORY_ITEM_IDS)) if k in spec}
    raise ValueError(f"the feature spec has no fixed-width {HISTORY_ITEM_IDS!r} feature "
                     f"(or its index {idx(HISTORY_ITEM_IDS)!r}) to read the history length "
                     f"from; found {found or 'neither'}")


# Split names written by the example generator.
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
RANK_SPLIT = "rank"                     # optional: between train and eval in time (two-stage rows)
CATALOG_SPLIT = "catalog"              # one example per catalog item (events or not); no labels

# --- transformed feature names (outputs of preprocessing_fn) ---
# Raw string features indexed with a tf.Transform vocabulary (`idx(key)`, vocabulary file
# `vocab_name(key)`); the ITEM_ID vocabulary also indexes HISTORY_ITEM_IDS.
VOCAB_KEYS = (USER_ID, ITEM_ID, BRAND, CATEGORY, TOP_CATEGORY)


def vocab_name(key: str) -> str:
    """Name of the tf.Transform vocabulary file for a raw feature key."""
    return key


def idx(key: str) -> str:
    """Transformed integer-index feature name for a raw string feature."""
    return key + "_idx"


PRICE_Z = "price_z"                    # z-scored log1p(price)
