"""Vocabulary for customer attributes, feedback texts and web pages (small literal lists)."""

from __future__ import annotations

FIRST_NAMES_F: tuple[str, ...] = (
    "Anna", "Emma", "Sofia", "Maria", "Laura", "Julia", "Lena", "Clara", "Elena", "Sara", "Olivia", "Mia",
    "Chloe", "Lucia", "Ines", "Marta", "Nora", "Ella", "Hanna", "Zoe", "Alice", "Camille", "Giulia", "Freya",
    "Ingrid", "Agnieszka", "Katarzyna", "Amelia", "Isla", "Charlotte",
)
FIRST_NAMES_M: tuple[str, ...] = (
    "Lukas", "Leon", "Paul", "Jonas", "Noah", "Elias", "Luca", "Marco", "Pablo", "Hugo", "Louis", "Jack",
    "Oliver", "Harry", "Liam", "Mateo", "Daniel", "David", "Adam", "Jan", "Piotr", "Erik", "Lars", "Matteo",
    "Alessandro", "Javier", "Sven", "Thomas", "Finn", "Oscar",
)
LAST_NAMES: tuple[str, ...] = (
    "Muller", "Schmidt", "Schneider", "Fischer", "Weber", "Martin", "Bernard", "Dubois", "Durand", "Leroy",
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "O'Brien", "Garcia", "Fernandez", "Lopez",
    "Martinez", "Sanchez", "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "de Vries", "Jansen", "Bakker",
    "Visser", "Nowak", "Kowalski", "Wisniewski", "Johansson", "Andersson", "Karlsson", "Nilsson", "Novak",
    "Moreau", "Laurent", "Evans", "Thomas", "Romano", "Colombo", "van Dijk", "Lewandowski", "Larsson",
)
# country, phone code, weight, cities
COUNTRIES: tuple[tuple[str, str, float, tuple[str, ...]], ...] = (
    ("Germany", "49", 0.22, ("Berlin", "Hamburg", "Munich", "Cologne", "Frankfurt")),
    ("France", "33", 0.17, ("Paris", "Lyon", "Marseille", "Toulouse", "Lille")),
    ("United Kingdom", "44", 0.17, ("London", "Manchester", "Birmingham", "Leeds", "Glasgow")),
    ("Spain", "34", 0.12, ("Madrid", "Barcelona", "Valencia", "Seville")),
    ("Italy", "39", 0.12, ("Rome", "Milan", "Naples", "Turin")),
    ("Netherlands", "31", 0.08, ("Amsterdam", "Rotterdam", "Utrecht", "Eindhoven")),
    ("Poland", "48", 0.07, ("Warsaw", "Krakow", "Wroclaw", "Gdansk")),
    ("Sweden", "46", 0.05, ("Stockholm", "Gothenburg", "Malmo")),
)
EMAIL_DOMAINS: tuple[str, ...] = ("gmail.com", "outlook.com", "yahoo.com", "web.de", "orange.fr", "icloud.com",
                                  "proton.me", "gmx.net")
ACQUISITION_CHANNELS: tuple[str, ...] = ("organic_search", "paid_search", "social_media", "referral", "email",
                                         "affiliate", "store")
ACQUISITION_WEIGHTS: tuple[float, ...] = (0.28, 0.20, 0.16, 0.10, 0.08, 0.08, 0.10)
GENDERS: tuple[str, ...] = ("F", "M", "X")
GENDER_WEIGHTS: tuple[float, ...] = (0.49, 0.48, 0.03)
DEVICES: tuple[str, ...] = ("desktop", "mobile", "tablet")
DEVICE_WEIGHTS: tuple[float, ...] = (0.45, 0.45, 0.10)
ORDER_CHANNELS: tuple[str, ...] = ("web", "app", "store")
WEB_PAYMENTS: tuple[str, ...] = ("card", "paypal", "apple_pay", "bank_transfer", "gift_card")
WEB_PAYMENT_WEIGHTS: tuple[float, ...] = (0.50, 0.24, 0.12, 0.09, 0.05)
STORE_PAYMENTS: tuple[str, ...] = ("card", "cash", "gift_card")
STORE_PAYMENT_WEIGHTS: tuple[float, ...] = (0.68, 0.28, 0.04)
LANDING_PAGES: tuple[str, ...] = ("/", "/deals", "/new-arrivals", "/account", "/category/{category}")
PLATFORMS: tuple[str, ...] = ("instagram", "facebook", "x", "tiktok", "linkedin")
PLATFORM_WEIGHTS: tuple[float, ...] = (0.35, 0.25, 0.15, 0.15, 0.10)
INTERACTION_TYPES: tuple[str, ...] = ("like", "comment", "share", "mention")
FEEDBACK_CHANNELS: tuple[str, ...] = ("email", "phone", "chat", "survey", "app_review")
FEEDBACK_CHANNEL_WEIGHTS: tuple[float, ...] = (0.25, 0.15, 0.20, 0.30, 0.10)
FEEDBACK_CATEGORIES: tuple[str, ...] = ("complaint", "praise", "question")

# Free text: commas, double quotes and line breaks are legitimate and CSV-quoted.
FEEDBACK_TEXTS: dict[str, tuple[str, ...]] = {
    "complaint": (
        "Delivery was late, and the box was damaged.",
        "The item stopped working after two weeks.\nI would like a replacement.",
        'Support said "we will call you back" but nobody did.',
        "Charged twice for one order, please fix this!",
        "Wrong size sent; the return label did not work.",
        "Parcel marked as delivered, never arrived.\nThird time this year.",
        'The "premium" quality is a joke, it broke on day one.',
        "Refund still not received after 3 weeks",
    ),
    "praise": (
        "Great quality, fast delivery. Will buy again!",
        "Friendly staff,\nquick refund. Thank you.",
        'Love the new "Pro" range, well done.',
        "Best prices around, and the app is easy to use.",
        "Everything arrived on time",
        "Excellent customer service, they solved it in minutes.",
    ),
    "question": (
        "Do you ship to Norway, or only within the EU?",
        "How do I change my delivery address?",
        'Is the "extended warranty" included in the price?',
        "Can I return an item bought in store online?",
        "When will the sizes be back in stock?",
    ),
}
