"""Demo: start the model server and the API, send example requests, print them, stop both.

    python -m serving.demo.demo_requests --serving-dir serving_models --shop sample_shop

Picks a shopper with history and one without from the shop, then asks for: their
recommendations, a search, items similar to one they engaged with, posts clicks on items
of another category and asks again (the answer changes at once), and shows the metrics.
Each request uses one of the API keys the stack made (``shopfront``: public, ``ingest``:
events, ``operator``: every role; docs/security.md) and says which; one request without a
key shows the 401, and only the operator's answer shows the user's history (``context``).
Last, ``--users`` more shoppers' recommendations: the product's two-stage answer (retrieval
and item-to-item candidates, ranked), each item with the reason naming its source.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import httpx

from pipeline.contract.load import DataContractError, load_shop
from pipeline.contract.spec import top_category
from pipeline.examples import ENGAGEMENT_EVENTS
from serving.demo.local_stack import LocalStack, StackError


def pick_examples(shop_dir: str) -> dict:
    """A user with the most engagements, an item they engaged with, a search text, and
    three in-stock items of a top category the user has not engaged with."""
    shop = load_shop(shop_dir, on_bad_rows="quarantine")
    events, items = shop.events, shop.items
    engaged = events[events["event_type"].isin(sorted(ENGAGEMENT_EVENTS))]
    user = engaged["user_id"].value_counts().sort_index(kind="stable").idxmax()
    mine = engaged[engaged["user_id"] == user]["item_id"]
    top = items["categories"].map(top_category)
    seen = set(top[items["item_id"].isin(mine)])
    other = items[~top.isin(seen) & items["in_stock"]]
    other = other[top[other.index] == top[other.index].iloc[0]] if len(other) else other
    searches = events[events["event_type"] == "search"]["query"]
    counts = engaged["user_id"].value_counts().sort_index(kind="stable")
    busiest = counts.sort_values(ascending=False, kind="stable").index.tolist()
    return {"user": user, "item": mine.iloc[-1], "new_items": other["item_id"].head(3).tolist(),
            "query": searches.iloc[0] if len(searches) else items["title"].iloc[0],
            "more_users": [u for u in busiest if u != user]}


def show(client: httpx.Client, method: str, path: str, key: str | None = None,
         stack: LocalStack | None = None, **kwargs) -> dict:
    """Send one request with the stack's key ``key`` (None: no key) and print it with a
    compact answer."""
    headers = stack.headers(key) if stack is not None and key else {}
    response = client.request(method, path, headers=headers, **kwargs)
    params = kwargs.get("params")
    shown = path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
    print(f"\n{method} {shown} -> {response.status_code}  "
          f"({'key ' + key if key else 'no key'})")
    body = response.json()
    if "items" in body:
        extra = {k: body[k] for k in ("strategy", "context", "degraded") if body.get(k)}
        print("  " + json.dumps(extra))
        for n, item in enumerate(body["items"], 1):
            print(f"  {n:2d}. {item['title'][:60]:<60} {item['category'][:32]:<32} "
                  f"{item['score']:8.4f}  {item['reason']['text'][:70]}")
    else:
        print("  " + json.dumps(body)[:400])
    return body


def run(stack: LocalStack, examples: dict, k: int, users: int = 0) -> None:
    print(f"up: API {stack.api_url} (docs /docs, metrics /metrics), TF Serving stand-in gRPC "
          f"{stack.host}:{stack.grpc_port}, REST {stack.host}:{stack.rest_port}")
    with httpx.Client(base_url=stack.api_url, timeout=30.0) as client:
        def call(method, path, key, **kwargs):
            return show(client, method, path, key, stack, **kwargs)

        call("GET", "/readyz", None)
        call("GET", "/v1/recommend", "shopfront", params={"user_id": examples["user"], "k": k})
        call("GET", "/v1/recommend", None, params={"user_id": examples["user"], "k": k})
        call("GET", "/v1/recommend", "shopfront", params={"user_id": "demo-new-shopper", "k": k})
        call("GET", "/v1/search", "shopfront", params={"q": examples["query"], "k": k})
        call("GET", f"/v1/items/{examples['item']}/similar", "shopfront", params={"k": k})
        clicks = [{"user_id": examples["user"], "item_id": item, "event_type": event_type}
                  for item in examples["new_items"] for event_type in ("view", "click")]
        call("POST", "/v1/events", "ingest", json=clicks)
        call("GET", "/v1/recommend", "operator", params={"user_id": examples["user"], "k": k})
        call("POST", "/v1/events", "ingest", json={"user_id": examples["user"],
                                                   "event_type": "clik", "item_id": "?"})
        if users:
            print(f"\nrecommendations for {users} more shoppers (retrieval + item-to-item "
                  "candidates -> ranking -> diversity)")
            for user in examples["more_users"][:users]:
                call("GET", "/v1/recommend", "shopfront", params={"user_id": user, "k": k})
        show_metrics(client.get("/metrics", headers=stack.headers("operator")).text)


def show_metrics(text: str) -> None:
    """A compact excerpt of the API's Prometheus metrics: requests by status, refusals by
    reason, model versions, seconds spent per recommendation stage."""
    requests, refused, versions, stages = {}, {}, [], []
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        labels = dict(part.split("=", 1) for part in
                      name[name.find("{") + 1:name.rfind("}")].split(",") if "=" in part)
        labels = {key: label.strip('"') for key, label in labels.items()}
        if name.startswith("shoprec_api_request_duration_seconds_count"):
            status = labels.get("status", "?")
            requests[status] = requests.get(status, 0) + int(float(value))
        elif name.startswith("shoprec_api_rejected_requests_total"):
            reason = labels.get("reason", "?")
            refused[reason] = refused.get(reason, 0) + int(float(value))
        elif name.startswith("shoprec_api_model_version"):
            versions.append(f"{labels.get('model', '?')} v{float(value):.0f}")
        elif name.startswith("shoprec_api_stage_duration_seconds_sum"):
            stages.append(f"{labels.get('stage', '?')} {float(value):.3f}")
    print("\nGET /metrics (excerpt)")
    print("  requests by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(requests.items())))
    print("  refused: " + (", ".join(f"{r}: {n}" for r, n in sorted(refused.items()))
                            or "none"))
    print("  models: " + ", ".join(versions))
    print("  seconds per stage: " + ", ".join(stages))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.demo.demo_requests", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serving-dir", default="serving_models",
                   help="folder with retrieval/<version> and ranking/<version>")
    p.add_argument("--shop", default="sample_shop", help="the shop the models were trained on")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--users", type=int, default=0,
                   help="then show the recommendations of this many more shoppers")
    p.add_argument("--startup-timeout-s", type=float, default=300.0)
    p.add_argument("--log-dir", help="where the model server and the API write their logs "
                                     "(default: a new temporary folder)")
    p.add_argument("--pseudonym-key-file", help="the key the pipeline pseudonymised user ids "
                                                "with (docs/privacy.md)")
    args = p.parse_args(argv)
    if not 1 <= args.k <= 50:
        p.error("-k must be between 1 and 50")
    if not 0 <= args.users <= 20:
        p.error("--users must be between 0 and 20")
    for model in ("retrieval", "ranking"):
        if not os.path.isdir(os.path.join(args.serving_dir, model)):
            p.error(f"no {model} model in {args.serving_dir!r} (run `make demo` first)")
    try:
        examples = pick_examples(args.shop)
    except (DataContractError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    events = tempfile.TemporaryDirectory(prefix="shoprec-demo-events-")  # fresh every run
    stack = LocalStack(args.serving_dir, args.shop, startup_timeout_s=args.startup_timeout_s,
                       log_dir=args.log_dir, event_store=f"sqlite:///{events.name}/events.sqlite3",
                       pseudonym_key_file=args.pseudonym_key_file)
    print(f"starting the model server and the API (logs in {stack.log_dir}/) ...", flush=True)
    try:
        stack.start()
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        run(stack, examples, args.k, args.users)
    finally:
        codes = stack.stop()
        events.cleanup()
        print(f"\nstopped: {', '.join(f'{n} exit {c}' for n, c in codes.items())}")
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
