"""Words, names and the dynamic case properties of each generated case type.

Property names are deliberately awkward in the ways real projects are: spaces, dots, dashes,
accents and CJK, SQL keywords, digits first, names that collide once made into identifiers
("First Name" / "first_name", "Age" / "age") and names longer than PostgreSQL's 63 bytes.
"""

from __future__ import annotations

import random
from typing import Callable

from etl.simulator.hqtime import (
    PLACEHOLDER, US_PER_DAY, fmt_date, fmt_seconds_z, fmt_us, fmt_us_naive,
)

GIVEN_NAMES = (
    "Amina", "Jane", "John", "Ngozi", "Kwame", "Aïcha", "José", "Zoë", "Priya", "Tendai",
    "Fatuma", "Grace", "Moses", "Esther", "Chinedu", "Wanjiru", "Nguyễn", "Mariam", "Otieno",
    "Lucía", "Samuel", "Halima", "Thandiwe", "Abebe", "Rosa", "Ibrahim", "Mercy", "Joseph",
)
SURNAMES = (
    "Okafor", "Mwangi", "Banda", "Diallo", "Mensah", "Kamau", "Ochieng", "Phiri", "Tembo",
    "Haile", "Nkosi", "García", "O'Brien", "Ndlovu", "Achieng", "Traoré", "Müller", "Sesay",
)
CJK_NAMES = ("王芳", "李娜", "张伟", "刘洋", "陈静", "杨敏")
VILLAGES = ("Kibera", "Mathare", "Kisumu Ndogo", "Bondo", "Siaya", "Ugunja", "Yala", "Rarieda")
DISTRICTS = ("North", "South", "East", "West", "Central")
WORDS = (
    "clinic", "fever", "water", "market", "school", "rain", "harvest", "bicycle", "radio",
    "goat", "maize", "well", "bridge", "church", "road", "river", "phone", "garden",
)

LONG_NAME_A = "this_property_name_is_deliberately_longer_than_the_sixty_three_byte_limit_alpha"
LONG_NAME_B = "this_property_name_is_deliberately_longer_than_the_sixty_three_byte_limit_beta"
LONG_QUESTION = "this_question_name_is_deliberately_longer_than_sixty_three_bytes_for_postgres"
BIG_VALUE = ("Field notes: " + "the household was visited and all was recorded. " * 220)[:10_240]

Value = Callable[[random.Random, int], object]  # (rng, moment in µs) -> property value


# `Random.randint`/`choice` are several times slower than this, and generation is hot.
def ri(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low + 1))


def pick(rng: random.Random, seq: tuple | list):
    return seq[int(rng.random() * len(seq))]


def given(rng: random.Random, _t: int) -> str:
    return pick(rng, GIVEN_NAMES)


def surname(rng: random.Random, _t: int) -> str:
    return pick(rng, SURNAMES)


def full_name(rng: random.Random, t: int) -> str:
    return f"{given(rng, t)} {surname(rng, t)}"


def choice(*options: object) -> Value:
    return lambda rng, _t: pick(rng, options)


def integer(low: int, high: int) -> Value:
    return lambda rng, _t: str(ri(rng, low, high))


def decimal(low: float, high: float) -> Value:
    return lambda rng, _t: f"{rng.uniform(low, high):.1f}"


def past_date(min_days: int, max_days: int) -> Value:
    return lambda rng, t: fmt_date(t - ri(rng, min_days, max_days) * US_PER_DAY)


def recent(fmt: Callable[[int], str]) -> Value:
    return lambda rng, t: fmt(t - ri(rng, 0, 3 * US_PER_DAY))


def dob(rng: random.Random, t: int) -> object:
    roll = rng.random()
    if roll < 0.05:
        return PLACEHOLDER  # HQ's "unknown" date
    if roll < 0.08:
        return ""
    return fmt_date(t - ri(rng, 365, 80 * 365) * US_PER_DAY)


def phone(rng: random.Random, _t: int) -> str:
    return f"+2547{ri(rng, 10_000_000, 99_999_999)}"


def gps(rng: random.Random, _t: int) -> str:
    return f"{rng.uniform(-1.5, 0.5):.6f} {rng.uniform(34.0, 37.0):.6f} 0.0 {ri(rng, 3, 40)}.0"


def notes(rng: random.Random, _t: int) -> str:
    if rng.random() < 0.03:
        return BIG_VALUE  # the occasional 10 KB value
    return " ".join(pick(rng, WORDS) for _ in range(ri(rng, 2, 8)))


def maybe_null(value: Value, p_null: float = 0.2) -> Value:
    return lambda rng, t: None if rng.random() < p_null else value(rng, t)


# name -> (probability the property is set at registration, value)
HOUSEHOLD_PROPS: dict[str, tuple[float, Value]] = {
    "village": (1.0, choice(*VILLAGES)),
    "district": (1.0, choice(*DISTRICTS)),
    "household_size": (1.0, integer(1, 12)),
    "water_source": (0.9, choice("piped", "well", "river", "rain")),
    "has_latrine": (0.9, choice("yes", "no")),
    "gps": (0.7, gps),
    "registration_date": (1.0, past_date(0, 2)),
    "head_of_household": (0.8, full_name),
    "Phone Number": (0.6, phone),
    "visit.count": (1.0, lambda rng, t: "0"),
    "2nd_visit": (0.5, lambda rng, t: ""),
    "adresse_complète": (0.4, lambda rng, t: f"{ri(rng, 1, 400)} {pick(rng, VILLAGES)} Road"),
    "group": (0.3, choice("A", "B", "C")),
    "from": (0.2, choice(*VILLAGES)),
    "last_visit": (0.5, recent(fmt_us)),
    "notes": (0.3, notes),
    "income_band": (0.5, maybe_null(choice("low", "middle", "high"))),
}

PATIENT_PROPS: dict[str, tuple[float, Value]] = {
    "first_name": (1.0, given),
    "First Name": (0.5, given),
    "first name": (0.3, given),
    "last_name": (1.0, surname),
    "dob": (0.95, dob),
    "age": (0.9, integer(0, 90)),
    "Age": (0.3, integer(0, 90)),
    "âge": (0.3, integer(0, 90)),
    "sex": (1.0, choice("male", "female")),
    "phone-number": (0.7, phone),
    "名字": (0.3, lambda rng, t: pick(rng, CJK_NAMES)),
    "select": (0.2, choice("option_a", "option_b")),
    "order": (0.3, integer(1, 9)),
    "user": (0.3, choice("chw1", "chw2", "supervisor")),
    "visit.count": (1.0, lambda rng, t: "0"),
    "2nd_visit": (0.4, lambda rng, t: ""),
    "lmp": (0.3, lambda rng, t: fmt_us_naive(t - ri(rng, 10, 200) * US_PER_DAY)),
    "edd": (0.3, past_date(-200, -10)),
    "risk_level": (0.9, choice("low", "medium", "high")),
    "referral_time": (0.3, recent(fmt_seconds_z)),
    "last_visit_date": (0.5, recent(fmt_us)),
    "weight": (0.8, decimal(2.5, 110.0)),
    "hiv_status": (0.6, maybe_null(choice("", "negative", "positive", "unknown"))),
    "consent_given": (0.9, choice("yes", "no")),
    "enrollment_date": (1.0, past_date(0, 30)),
    LONG_NAME_A: (0.3, choice("alpha")),
    LONG_NAME_B: (0.3, choice("beta")),
    "notes": (0.3, notes),
}

CONTACT_PROPS: dict[str, tuple[float, Value]] = {
    "relation": (1.0, choice("spouse", "child", "parent", "sibling", "neighbour", "colleague")),
    "contact_type": (1.0, choice("household", "workplace", "community")),
    "exposure_date": (0.9, past_date(1, 21)),
    "exposure-site": (0.5, choice(*VILLAGES)),
    "symptoms": (0.7, choice("", "fever", "fever cough", "cough headache", "none")),
    "follow_up_status": (1.0, choice("pending")),
    "Name With Spaces": (0.4, full_name),
    "order": (0.2, integer(1, 9)),
    "user": (0.2, choice("chw1", "chw3")),
    "visit.count": (1.0, lambda rng, t: "0"),
    "1st_contact_date": (0.6, past_date(0, 3)),
    "notes": (0.2, notes),
}

CASE_PROPS = {"household": HOUSEHOLD_PROPS, "patient": PATIENT_PROPS, "contact": CONTACT_PROPS}

# Properties a follow-up form may change, per case type.
VISIT_PROPS: dict[str, dict[str, Value]] = {
    "household": {
        "water_source": choice("piped", "well", "river", "rain"),
        "has_latrine": choice("yes", "no"),
        "household_size": integer(1, 12),
        "last_visit": recent(fmt_us),
        "notes": notes,
    },
    "patient": {
        "weight": decimal(2.5, 110.0),
        "risk_level": choice("low", "medium", "high"),
        "last_visit_date": recent(fmt_us),
        "hiv_status": choice("negative", "positive", "unknown"),
        "referral_time": recent(fmt_seconds_z),
        "outcome": choice("continue", "referred"),
    },
    "contact": {
        "follow_up_status": choice("pending", "reached", "unreachable"),
        "symptoms": choice("", "fever", "cough", "none"),
        "last_follow_up": recent(fmt_us_naive),
    },
}

# Only with `awkward=True`: what a loader must clean before PostgreSQL will take it.
NUL_PROPERTY_NAME = "bad\u0000name"
NUL_VALUE = "before\u0000after"
LONE_SURROGATE_VALUE = "broken \ud800 emoji"


def property_names(case_type: str) -> list[str]:
    """Every dynamic property name a case type can carry (the app's `case_properties`)."""
    names = set(CASE_PROPS.get(case_type, {})) | set(VISIT_PROPS.get(case_type, {}))
    if case_type == "patient":
        names.add("outcome")
    return sorted(names | {"name"})
