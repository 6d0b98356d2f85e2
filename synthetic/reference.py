"""Fixed reference data of the synthetic retailer: metros, stores, categories, email domains.

Nothing here is random; generators sample from these tables with a seeded RNG.
"""

from __future__ import annotations

# (metro, state, area codes, ZIP prefixes, cities, population weight). Area codes are real.
METROS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], tuple[str, ...], float], ...] = (
    (
        "New York",
        "NY",
        ("212", "646", "718", "917", "347"),
        ("100", "101", "112", "113", "104"),
        ("New York", "Brooklyn", "Queens", "Bronx", "Staten Island"),
        0.19,
    ),
    (
        "Los Angeles",
        "CA",
        ("818", "213", "310", "323", "626"),
        ("900", "913", "914", "917"),
        ("Los Angeles", "Burbank", "Glendale", "Pasadena", "Santa Monica"),
        0.14,
    ),
    (
        "Chicago",
        "IL",
        ("312", "773", "872"),
        ("606", "604", "605"),
        ("Chicago", "Evanston", "Oak Park", "Cicero"),
        0.10,
    ),
    (
        "Houston",
        "TX",
        ("713", "832", "281"),
        ("770", "772", "773"),
        ("Houston", "Pasadena", "Sugar Land", "Katy"),
        0.08,
    ),
    ("Phoenix", "AZ", ("602", "480", "623"), ("850", "852", "853"), ("Phoenix", "Mesa", "Scottsdale", "Tempe"), 0.06),
    (
        "Miami",
        "FL",
        ("305", "786", "954"),
        ("331", "330", "333"),
        ("Miami", "Hialeah", "Miami Beach", "Fort Lauderdale"),
        0.07,
    ),
    (
        "Atlanta",
        "GA",
        ("404", "678", "770"),
        ("303", "300", "301"),
        ("Atlanta", "Marietta", "Decatur", "Sandy Springs"),
        0.07,
    ),
    (
        "Boston",
        "MA",
        ("617", "857", "781"),
        ("021", "022", "018"),
        ("Boston", "Cambridge", "Somerville", "Quincy"),
        0.06,
    ),
    (
        "San Francisco",
        "CA",
        ("415", "628", "510"),
        ("941", "945", "946"),
        ("San Francisco", "Oakland", "Berkeley", "Daly City"),
        0.07,
    ),
    ("Seattle", "WA", ("206", "425", "253"), ("981", "980", "984"), ("Seattle", "Bellevue", "Tacoma", "Redmond"), 0.06),
    ("Portland", "OR", ("503", "971"), ("972", "970"), ("Portland", "Beaverton", "Gresham", "Hillsboro"), 0.05),
    ("Las Vegas", "NV", ("702", "725"), ("891", "890"), ("Las Vegas", "Henderson", "North Las Vegas"), 0.05),
)
STORES_PER_METRO = 3
# Stores that type a placeholder phone at checkout: (store index, placeholder); None = store's own number.
PLACEHOLDER_STORES: tuple[tuple[int, str | None], ...] = ((0, None), (7, "0000000000"), (13, None))

STREET_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("Street", "St"),
    ("Avenue", "Ave"),
    ("Road", "Rd"),
    ("Boulevard", "Blvd"),
    ("Lane", "Ln"),
    ("Drive", "Dr"),
    ("Court", "Ct"),
    ("Place", "Pl"),
    ("Terrace", "Ter"),
    ("Way", "Way"),
)
STREET_BASES: tuple[str, ...] = (
    "Oak",
    "Maple",
    "Main",
    "Pine",
    "Cedar",
    "Elm",
    "Washington",
    "Lake",
    "Hill",
    "Park",
    "Sunset",
    "Lincoln",
    "Jackson",
    "River",
    "Highland",
    "Church",
    "Walnut",
    "Spring",
    "Franklin",
    "Madison",
    "Willow",
    "Chestnut",
    "Broad",
    "Center",
    "Adams",
    "Forest",
    "Meadow",
    "Ridge",
    "Valley",
    "Harbor",
)

# category -> (share of catalogue, (subcategories), (brands), (min price, max price))
CATEGORIES: dict[str, tuple[float, tuple[str, ...], tuple[str, ...], tuple[float, float]]] = {
    "grocery": (
        0.20,
        ("snacks", "beverages", "pantry", "dairy", "frozen"),
        ("FreshFarm", "Golden Valley", "Nature's Cup", "PantryPro", "Urban Bite"),
        (1.5, 18.0),
    ),
    "electronics": (
        0.10,
        ("phones", "audio", "computers", "accessories", "tv"),
        ("Voltix", "Sonaro", "Pixelon", "Nordtek", "Zentra"),
        (15.0, 900.0),
    ),
    "apparel": (
        0.16,
        ("womens", "mens", "kids", "shoes", "accessories"),
        ("Blue Harbor", "Urbano", "Kettle & Co", "Stride", "Linea"),
        (8.0, 140.0),
    ),
    "home": (
        0.13,
        ("kitchen", "bedding", "decor", "furniture", "storage"),
        ("Casa Nova", "Hearthly", "Nordvik", "Homestead", "Loom & Oak"),
        (6.0, 450.0),
    ),
    "beauty": (
        0.12,
        ("skincare", "makeup", "haircare", "fragrance"),
        ("Lumiere", "Pure Petal", "Glowa", "Verde Skin", "Aurelle"),
        (4.0, 95.0),
    ),
    "sports": (
        0.11,
        ("fitness", "outdoor", "cycling", "team sports"),
        ("Peakline", "Trailfox", "Velora", "ProStride", "Summit Gear"),
        (9.0, 320.0),
    ),
    "toys": (
        0.09,
        ("games", "puzzles", "dolls", "building", "outdoor play"),
        ("Playwise", "BrickBox", "Tiny Town", "Wonderkin", "Jolly Jam"),
        (5.0, 85.0),
    ),
    "pet": (
        0.09,
        ("dog", "cat", "aquarium", "small pets"),
        ("Happy Paws", "Whisker Co", "AquaLife", "Furry Feast", "PetPal"),
        (3.0, 70.0),
    ),
}
CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)
PRODUCT_WORDS: tuple[str, ...] = (
    "Classic",
    "Essential",
    "Premium",
    "Lite",
    "Max",
    "Pro",
    "Plus",
    "Eco",
    "Select",
    "Original",
    "Deluxe",
    "Mini",
)

# domain -> weight; which domains ignore dots / accept +tags matters to identity resolution
EMAIL_DOMAINS: tuple[tuple[str, float], ...] = (
    ("gmail.com", 0.42),
    ("yahoo.com", 0.14),
    ("outlook.com", 0.10),
    ("hotmail.com", 0.09),
    ("icloud.com", 0.09),
    ("aol.com", 0.05),
    ("comcast.net", 0.04),
    ("proton.me", 0.03),
    ("att.net", 0.04),
)
DOT_INSENSITIVE = frozenset({"gmail.com"})
PLUS_TAG_DOMAINS = frozenset({"gmail.com", "outlook.com", "icloud.com", "proton.me"})
EMAIL_TAGS: tuple[str, ...] = ("shop", "promo", "deals", "store", "news", "rewards")

COUPON_CODES: tuple[str, ...] = ("SAVE10", "WELCOME15", "SPRING20", "FALL15", "VIP25", "FREESHIP")
CAMPAIGN_OBJECTIVES: tuple[str, ...] = ("promotion", "cross_sell", "winback", "retention", "new_arrivals")
ENRICHMENT_VENDORS: tuple[str, ...] = ("acme_data", "datacorp")
INCOME_BANDS: tuple[str, ...] = ("<25k", "25-50k", "50-75k", "75-100k", "100-150k", "150k+")
