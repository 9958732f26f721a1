"""Where every benchmark's results land: <stem>.md, <stem>.json and <stem>.png in one folder."""
import json
import os


def write_outputs(results, out_dir, stem, markdown_text, draw_chart):
    """Writes `markdown_text` to <stem>.md, `results` to <stem>.json and calls
    `draw_chart(results, png_path)`; returns the three paths (md, json, png)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"{stem}.{ext}") for ext in ("md", "json", "png")]
    with open(paths[0], "w", encoding="utf-8") as f:
        f.write(markdown_text)
    with open(paths[1], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, default=str)
        f.write("\n")
    draw_chart(results, paths[2])
    return paths
