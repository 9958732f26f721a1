"""Titles, descriptions and search queries of the sample shop, written from item attributes."""
from pipeline.sample_shop.taxonomy import ATTRIBUTES, BENEFITS, CLOSERS, MASS_NOUNS

# Attributes written after the product type, in parentheses ("... Novel (Paperback)").
SUFFIX_ATTRIBUTES = ("book_format", "age")


def soft_lower(text: str) -> str:
    """Lower-case ordinary words but keep acronyms and codes ("Vitamin C" -> "vitamin C")."""
    return " ".join(w[0].lower() + w[1:] if len(w) > 1 and w[1:].islower() else w
                    for w in text.split(" "))


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] if text else text


def _counted(kind: str, ptype: str) -> str:
    """The kind with "a"/"an" in front, or bare for plurals and mass nouns ("olive oil")."""
    if (ptype.endswith("s") and not ptype.endswith("ss")) or ptype in MASS_NOUNS:
        return kind
    return ("an " if kind[:1].lower() in "aeiou" else "a ") + kind


def title_of(brand: str, ptype: str, values: dict, extra: str = "", name: str = "") -> str:
    """Product title, e.g. "Velora Berry Matte Lipstick, 3.5 g".

    `values` maps attribute name -> value in title order. Named items (books) start with their
    name instead of the brand: "The Silent Harbor: Mystery Novel (Paperback)".
    """
    front = [v for k, v in values.items() if k not in SUFFIX_ATTRIBUTES]
    back = [v for k, v in values.items() if k in SUFFIX_ATTRIBUTES]
    core = " ".join(front + [ptype])
    title = f"{name}: {core}" if name else f"{brand} {core}"
    if back:
        title += " (" + ", ".join(back) + ")"
    if extra:
        title += ", " + extra
    return title


def description_of(top: str, brand: str, ptype: str, values: dict, extra: str, name: str,
                   choices: tuple) -> str:
    """Two to five plain sentences about the item.

    `choices` are four small non-negative random integers chosen by the caller (opening
    sentence, benefit, closer, attribute-sentence order), so the text stays deterministic.
    """
    opening_pick, benefit_pick, closer_pick, order_pick = choices
    adjs = " ".join(soft_lower(v) for k, v in values.items() if k not in SUFFIX_ATTRIBUTES)
    kind = f"{adjs} {soft_lower(ptype)}".strip()
    if name:
        openings = (f"{name} is {_counted(kind, ptype)} published by {brand}.",
                    f"From {brand}, {name} is {_counted(kind, ptype)} readers return to.")
    else:
        openings = (_sentence(f"{_counted(kind, ptype)} from {brand}."),
                    f"{brand} presents {_counted(kind, ptype)}.",
                    f"Meet the {brand} {ptype}: {_counted(kind, ptype)} made for every day.")
    sentences = [openings[opening_pick % len(openings)]]
    attr_sentences = [_sentence(ATTRIBUTES[k][1].format(v=soft_lower(v)))
                      for k, v in values.items()]
    if order_pick % 2 and len(attr_sentences) > 1:
        attr_sentences.reverse()
    sentences += attr_sentences
    if extra:
        head = extra.split(" ")[0]
        sentences.append(f"Sold as a {extra.lower()}." if head in ("Set", "Pack", "Pair")
                         else f"Size: {extra}.")
    benefits = BENEFITS[top]
    sentences.append(benefits[benefit_pick % len(benefits)])
    closer = CLOSERS[closer_pick % len(CLOSERS)]
    if closer:
        sentences.append(closer)
    return " ".join(sentences)


def query_of(words: list) -> str:
    """Search text as a shopper types it: lower case, single spaces."""
    return " ".join(w.lower() for w in words if w)
