"""The words fake products are made of: brands, sellers, options and the phrases of their
descriptions, and a vocabulary per kind of shop, chosen by a keyword in the robot's host."""

from typing import Any

BRANDS = [
    "Northpeak", "Aldervane", "Brightfold", "Cobalt & Pine", "Driftline", "Emberfield",
    "Foxglove", "Granite Row", "Harbor Lane", "Ironbark", "Juniper", "Kestrel",
    "Lumen Works", "Marlow", "Nimbus", "Oakhaven", "Pellucid", "Quarry", "Redwing Studio",
    "Solace",
]  # fmt: skip
SELLERS = [
    "Parcel Depot", "Second Aisle", "ValueHaus", "Corner Outlet", "Bargain Loft", "ShopNorth",
]  # fmt: skip
COLORS = [
    "Black", "White", "Navy", "Olive", "Sand", "Grey", "Red", "Forest", "Rust", "Sky",
    "Charcoal", "Plum",
]  # fmt: skip
ADJECTIVES = [
    "Aero", "Summit", "Classic", "Urban", "Trail", "Glide", "Tempo", "Ridge", "Nova",
    "Drift", "Apex", "Core", "Vista", "Pulse", "Terra", "Swift",
]  # fmt: skip
USES = [
    "everyday wear", "long weekends outdoors", "daily commutes", "wet climates",
    "travel", "all-day comfort", "weekend adventures", "cold mornings", "training",
    "casual evenings",
]  # fmt: skip
FEATURES = [
    "a recycled lining", "reinforced seams", "a water-resistant finish", "a padded collar",
    "breathable mesh panels", "a lightweight frame", "taped seams", "a moisture-wicking layer",
    "a reflective trim", "an adjustable fit", "a cushioned footbed", "a grippy outsole",
    "a soft brushed interior", "a quick-dry shell",
]  # fmt: skip
MATERIALS = [
    "organic cotton", "recycled polyester", "full-grain leather", "merino wool", "ripstop nylon",
    "suede", "canvas", "bamboo viscose",
]  # fmt: skip
CLOSERS = [
    "Free returns within 30 days.", "Machine washable at 30 degrees.",
    "Designed in Portland and made in Portugal.", "Backed by a two-year warranty.",
    "Part of our low-impact collection.", "Ships in recyclable packaging.",
    "Limited stock in some sizes.", "Reviewed by our fit team before release.",
]  # fmt: skip

# Per-category vocabulary, chosen by a keyword in the host; unknown hosts get "shoes".
PROFILES: dict[str, dict[str, Any]] = {
    "shoes": {
        "nouns": ["Runner", "Trainer", "Sneaker", "Boot", "Loafer", "Sandal", "Trail Shoe",
                  "Court Shoe", "Slip-On", "Hiker"],
        "subtitles": ["Men's running shoe", "Women's running shoe", "Unisex sneaker",
                      "Kids' shoe", "Waterproof hiking boot", "Everyday loafer"],
        "opt1": ("Size", ["6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5",
                          "11", "12", "13"]),
        "opt2": ("Color", COLORS),
        "price": (35.0, 220.0),
    },
    "outdoor": {
        "nouns": ["Tent", "Backpack", "Rain Jacket", "Sleeping Bag", "Headlamp",
                  "Trekking Pole", "Fleece", "Water Filter", "Camp Stove", "Down Vest"],
        "subtitles": ["3-season gear", "Ultralight kit", "Camping essential",
                      "Alpine equipment", "Trail accessory", "Insulated layer"],
        "opt1": ("Size", ["XS", "S", "M", "L", "XL", "XXL"]),
        "opt2": ("Color", COLORS),
        "price": (15.0, 480.0),
    },
    "books": {
        "nouns": ["Atlas", "Field Guide", "Cookbook", "Novel", "Memoir", "Handbook",
                  "Anthology", "Workbook", "Almanac", "Companion"],
        "subtitles": ["A novel", "Second edition", "Illustrated edition", "Revised and expanded",
                      "Collected essays", "A practical guide"],
        "opt1": ("Format", ["Hardcover", "Paperback", "Ebook", "Audiobook"]),
        "opt2": ("Language", ["English", "German", "French", "Spanish"]),
        "price": (6.0, 60.0),
    },
}  # fmt: skip


QUALITIES = [
    "soft", "light", "durable", "breathable", "warm", "supportive", "flexible", "sturdy", "sleek",
    "versatile", "rugged", "refined", "cushioned", "padded", "waterproof", "packable", "compact",
    "roomy", "slim", "relaxed", "textured", "smooth", "matte", "bright", "muted", "bold", "subtle",
    "quiet", "grippy", "stretchy", "airy", "dense",
]  # fmt: skip
PARTS = [
    "upper", "sole", "heel", "toe box", "collar", "lining", "strap", "buckle", "zip", "pocket",
    "hood", "cuff", "hem", "seam", "panel", "shell", "frame", "tread", "insole", "tongue",
    "lace loop", "binding", "cover", "drawcord",
]  # fmt: skip
VERBS = [
    "holds up", "stays comfortable", "keeps its shape", "dries quickly", "moves with you",
    "handles the miles", "stays put", "feels broken-in", "keeps you dry", "packs down small",
    "resists scuffs", "breathes well",
]  # fmt: skip
PLACES = [
    "city streets", "rocky trails", "wet pavement", "long flights", "the office", "the beach",
    "mountain passes", "forest paths", "the gym", "river crossings", "snowy sidewalks",
    "festival fields", "coastal walks", "the commute", "late trains", "weekend markets",
]  # fmt: skip
TIMES = [
    "all day", "through winter", "on hot afternoons", "after months of use", "in the rain",
    "at dawn", "on long weekends", "season after season", "from the first wear", "in a pinch",
]  # fmt: skip
PEOPLE = [
    "testers", "our fit team", "customers", "trail runners", "commuters", "reviewers",
    "designers", "guides",
]  # fmt: skip


def profile_for(host: str) -> dict[str, Any]:
    """The vocabulary for a host: the first profile whose name appears in it."""
    for name, profile in PROFILES.items():
        if name in host:
            return profile
    return PROFILES["shoes"]
