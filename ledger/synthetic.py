"""A synthetic county for the demo and for tests: people, contributions, CSV files.

Deterministic for a given seed. Resident IDs are valid (ledger.resident_id.make), birth
dates run 1945-2005, a share of people are in hardship groups (their contribution is the tier
less the part the government pays on their behalf), and everyone has a bank account.

A small cast of people is always present whatever the size, so the demo's stories
(transitional pensioners, back-payment near pension age, a change of identity group) never
depend on luck.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from ledger import resident_id
from ledger.aggregates.participant import birthday_at, on_behalf_fen
from ledger.bulk import CONTRIBUTION_COLUMNS, PARTICIPANT_COLUMNS
from ledger.money import format_yuan
from ledger.rules import Parameters

MAX_PEOPLE = 200_000
MIN_PEOPLE = 20  # room for the cast and a few ordinary residents
# Two county area codes (GB/T 2260 shape, province 43): the county and a neighbour whose
# people moved in.
AREA_CODES = ("431121", "431122")
TOWNSHIPS: dict[str, tuple[str, ...]] = {
    "城关镇": ("东门社区", "西门社区", "河东村", "柳树村", "新华村"),
    "东湖镇": ("湖滨村", "渔业村", "荷花村", "长岭村"),
    "西山乡": ("石门村", "松林村", "茶园村", "山口村", "上坪村", "下坪村"),
    "南河镇": ("南河村", "沙洲村", "新桥村", "双塘村"),
    "北岭乡": ("北岭村", "枫树村", "黄土村", "石桥村", "龙泉村"),
}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶"
GIVEN = ("伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰",
         "娟", "涛", "明", "超", "秀兰", "霞", "平", "刚", "桂英", "建华", "国强", "春梅",
         "玉兰", "德明", "志刚", "海燕", "红梅", "长生", "金凤", "福林", "淑珍", "建国")
BANK_CODES = ("102", "103", "104", "105", "402", "403")  # ICBC, ABC, BOC, CCB, RCC, PSBC
CHANNELS = ("bank", "township_station", "online", "cash")
# Share of people in each identity group, in per mille.
GROUP_PER_MILLE = (("ordinary", 900), ("minimum_living", 40), ("registered_poor", 30),
                   ("destitute", 15), ("severely_disabled", 15))
SCHEME_START = date(2011, 1, 1)



@dataclass(frozen=True)
class Person:
    id_number: str
    name: str
    township: str
    village: str
    identity_group: str
    enrol_date: date
    account_name: str
    account_number: str
    bank_code: str

    @property
    def birth_date(self) -> date:
        return resident_id.birth_date(self.id_number)


@dataclass(frozen=True)
class Contribution:
    id_number: str
    year: int
    tier_fen: int
    amount_fen: int
    channel: str
    receipt_no: str
    value_date: date
    back_payment: bool = False


@dataclass(frozen=True)
class GroupChange:
    id_number: str
    identity_group: str
    effective_from: date


@dataclass
class Cast:
    """The people the demo's stories are about."""

    elderly: list[str] = field(default_factory=list)       # transitional: pension, no contributions
    near_pension: list[str] = field(default_factory=list)  # turn 60 in the last year; back-pay
    becomes_poor: str = ""                                 # moves to a hardship group
    young_death: str = ""                                  # a contributor who dies


@dataclass
class County:
    people: list[Person]
    contributions: dict[int, list[Contribution]]
    group_changes: list[GroupChange]
    cast: Cast
    years: tuple[int, ...]
    _index: dict[str, Person] = field(default_factory=dict, repr=False)

    def person(self, id_number: str) -> Person:
        if len(self._index) != len(self.people):
            self._index = {p.id_number: p for p in self.people}
        return self._index[id_number]


def _group_on(p: Person, changes: Sequence[GroupChange], on: date) -> str:
    group = p.identity_group
    for c in sorted(changes, key=lambda c: c.effective_from):
        if c.id_number == p.id_number and c.effective_from <= on:
            group = c.identity_group
    return group


class _Ids:
    """Unique valid resident IDs."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def make(self, born: date, female: bool) -> str:
        for _ in range(1000):
            seq = self.rng.randrange(0, 1000)
            # GB 11643: the sequence is odd for men, even for women.
            if (seq % 2 == 0) != female:
                seq = (seq + 1) % 1000
            idn = resident_id.make(self.rng.choice(AREA_CODES), born, seq)
            if idn not in self.used:
                self.used.add(idn)
                return idn
        raise AssertionError("no free ID sequence for that birth date")


def _random_birth(rng: random.Random, first_year: int, last_year: int) -> date:
    start = date(first_year, 1, 1).toordinal()
    end = date(last_year, 12, 31).toordinal()
    return date.fromordinal(rng.randint(start, end))


def _birth_for_population(rng: random.Random) -> date:
    # Rural populations are older than the national average: weight 1955-1985 heavily.
    band = rng.choices([(1945, 1954), (1955, 1969), (1970, 1985), (1986, 1995), (1996, 2005)],
                       weights=[12, 32, 30, 16, 10])[0]
    return _random_birth(rng, *band)


def _enrol_date(rng: random.Random, born: date, first_year: int) -> date:
    earliest = max(SCHEME_START, birthday_at(born, 16) + timedelta(days=1))
    latest = max(earliest, date(first_year, 1, 15))
    return date.fromordinal(rng.randint(earliest.toordinal(), latest.toordinal()))


def make_county(n_people: int, years: Sequence[int], rules_for: Callable[[int], Parameters],
                seed: int = 20240601) -> County:
    """A county of n_people with a contribution file for each year in `years`.

    rules_for(year) gives the rules in force for that year's contributions (tiers and the
    on-behalf shares come from there, never from constants here).
    """
    assert MIN_PEOPLE <= n_people <= MAX_PEOPLE, n_people
    years = tuple(sorted(years))
    assert years and len(years) <= 20
    rng = random.Random(seed)
    ids = _Ids(rng)
    first_year, last_year = years[0], years[-1]
    cast = Cast()
    people: list[Person] = []

    def add(born: date, group: str, *, enrol_on: date | None = None) -> Person:
        female = rng.random() < 0.5
        idn = ids.make(born, female)
        township = rng.choice(list(TOWNSHIPS))
        name = rng.choice(SURNAMES) + rng.choice(GIVEN)
        p = Person(id_number=idn, name=name, township=township,
                   village=rng.choice(TOWNSHIPS[township]), identity_group=group,
                   enrol_date=enrol_on or _enrol_date(rng, born, first_year),
                   account_name=name,
                   account_number="6217" + "".join(rng.choices("0123456789", k=15)),
                   bank_code=rng.choice(BANK_CODES))
        people.append(p)
        return p

    # The cast first.
    for i in range(4):
        cast.elderly.append(add(date(1946 + i, 3 + i, 10 + i), "ordinary").id_number)
    for i in range(3):
        # 60 during the last year: contributes every demo year, then back-pays the rest.
        cast.near_pension.append(
            add(date(last_year - 60, 2 + i, 5 + i), "ordinary").id_number)
    cast.becomes_poor = add(date(1975, 8, 8), "ordinary").id_number
    cast.young_death = add(date(1988, 11, 2), "ordinary").id_number
    groups = [g for g, _ in GROUP_PER_MILLE]
    weights = [w for _, w in GROUP_PER_MILLE]
    while len(people) < n_people:
        add(_birth_for_population(rng), rng.choices(groups, weights=weights)[0])

    changes: list[GroupChange] = []
    if len(years) > 1:
        changes.append(GroupChange(cast.becomes_poor, "minimum_living", date(years[1], 1, 1)))

    contributions: dict[int, list[Contribution]] = {}
    receipt_no = 0
    for year in years:
        params = rules_for(year)
        tiers = params.contribution_tiers_fen
        # Most people pay the low tiers; a few pay the higher ones.
        tier_weights = [max(1, 60 // (i + 1) ** 2) for i in range(len(tiers))]
        rows: list[Contribution] = []
        for p in people:
            if p.id_number in cast.elderly:
                continue
            start_of_year = date(year, 1, 1)
            if resident_id.age_on(p.birth_date, start_of_year) >= params.pension_age:
                continue  # of pension age: no longer contributing
            value_date = date(year, rng.randint(3, 11), rng.randint(1, 28))
            if value_date <= p.enrol_date:
                continue  # enrolled after this year's collection
            is_cast = p.id_number in cast.near_pension or p.id_number in (
                cast.becomes_poor, cast.young_death)
            if not is_cast and rng.random() < 0.06:
                continue  # some miss a year
            group = _group_on(p, changes, value_date)
            if p.id_number in cast.near_pension:
                tier = 50000 if 50000 in tiers else tiers[-1]
            elif group != "ordinary":
                tier = tiers[0] if rng.random() < 0.8 else tiers[min(1, len(tiers) - 1)]
            else:
                tier = rng.choices(tiers, weights=tier_weights)[0]
            receipt_no += 1
            rows.append(Contribution(
                id_number=p.id_number, year=year, tier_fen=tier,
                amount_fen=tier - on_behalf_fen(params, group, tier),
                channel=rng.choice(CHANNELS), receipt_no=f"R{year}{receipt_no:07d}",
                value_date=value_date))
        contributions[year] = rows
    return County(people=people, contributions=contributions, group_changes=changes,
                  cast=cast, years=years)


def write_participants_csv(path: Path, people: Iterable[Person]) -> int:
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(PARTICIPANT_COLUMNS)
        for p in people:
            w.writerow([p.id_number, p.name, p.township, p.village, p.identity_group,
                        p.enrol_date.isoformat(), p.account_name, p.account_number,
                        p.bank_code])
            n += 1
    return n


def write_contributions_csv(path: Path, rows: Iterable[Contribution]) -> int:
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CONTRIBUTION_COLUMNS)
        for c in rows:
            w.writerow([c.id_number, c.year, format_yuan(c.tier_fen), format_yuan(c.amount_fen),
                        c.channel, c.receipt_no, c.value_date.isoformat(),
                        "true" if c.back_payment else "false"])
            n += 1
    return n
