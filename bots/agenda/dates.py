"""Dates and times in natural French: « jeudi 18h30 pendant 2h », « le 3 décembre toute la
journée », « tous les lundis à 9h jusqu'au 30 juin », « demain de 14h à 16h ».

``read_event`` splits a command's text into a title, when, and a place; ``read_when``
reads a date expression alone (``!agenda déplace 3 à vendredi 10h``). What is
ambiguous is asked, never guessed: « jeudi » said on a Thursday, a time that
occurs twice when clocks go back. What does not exist is refused: « 31 février »,
2h30 on the night clocks go forward. Times are wall-clock times of the
collectivité's time zone (Europe/Paris by default).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from maillage.bots.runtime.commands import CommandError
from maillage.i18n import t

WEEKDAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
WEEKDAYS_EN = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
RRULE_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
MONTH_NAMES = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
               "novembre", "décembre")
MONTH_ABBREVIATIONS = {"janv": 1, "fev": 2, "fevr": 2, "avr": 4, "juil": 7, "sept": 9, "oct": 10, "nov": 11,
                       "dec": 12}
DEFAULT_DURATION = timedelta(hours=1)
MAX_DURATION = timedelta(days=31)
_TIME = re.compile(r"^(\d{1,2})(?:h(\d{2})?|:(\d{2}))$")
_NUMERIC_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})(?:/(\d{2}|\d{4}))?$")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_DURATION = re.compile(r"^(\d{1,3})(?:h(\d{2})?|min|mn|m)?$")


class DateError(CommandError):
    """The date expression is wrong, impossible or ambiguous: the message says what to type."""


@dataclass(frozen=True)
class Recurrence:
    frequency: str  # DAILY, WEEKLY, MONTHLY
    weekday: int | None = None  # 0 = Monday, for WEEKLY
    until: date | None = None

    def rrule(self, timezone: ZoneInfo) -> dict[str, object]:
        rule: dict[str, object] = {"FREQ": self.frequency}
        if self.weekday is not None:
            rule["BYDAY"] = RRULE_DAYS[self.weekday]
        if self.until is not None:  # the whole last day counts, in local time
            rule["UNTIL"] = datetime.combine(self.until, time(23, 59, 59), timezone)
        return rule


@dataclass(frozen=True)
class When:
    start: datetime  # aware, in the collectivité's zone; midnight for a whole day
    end: datetime
    all_day: bool = False
    recurrence: Recurrence | None = None


@dataclass(frozen=True)
class EventText:
    title: str
    when: When
    place: str


def fold(word: str) -> str:
    """Lower case without accents or apostrophe variants: what the parser compares."""
    word = word.lower().replace("’", "'")
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def read_event(text: str, now: datetime, *, default_duration: timedelta = DEFAULT_DURATION) -> EventText:
    """``Conseil municipal jeudi 18h30 pendant 2h salle du conseil`` → title, when, place."""
    words = text.split()
    start = next((i for i in range(len(words)) if _Reader(words, i, now).starts_expression()), None)
    if start is None:
        raise DateError(t("agenda.date_missing"))
    title = " ".join(words[:start]).strip(" ,;:-")
    if not title:
        raise DateError(t("agenda.title_missing"))
    reader = _Reader(words, start, now)
    when = reader.read(default_duration)
    place = " ".join(words[reader.position:]).strip(" ,;:-")
    return EventText(title[:200], when, place[:200])


def read_when(text: str, now: datetime, *, duration: timedelta = DEFAULT_DURATION) -> When:
    """A date expression alone (the whole text): ``vendredi 10h``, ``le 3/12 à 14h``."""
    words = text.split()
    if words and fold(words[0]) in ("a", "au", "pour"):
        words = words[1:]
    reader = _Reader(words, 0, now)
    if not words or not reader.starts_expression():
        raise DateError(t("agenda.date_unreadable", text=text[:60]))
    when = reader.read(duration)
    if reader.position < len(words):
        raise DateError(t("agenda.date_unreadable", text=" ".join(words[reader.position:])[:60]))
    return when


def exact_local(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """``day`` at ``clock`` in ``zone``, refused when that wall-clock time does not exist (clocks
    go forward) or exists twice (clocks go back): the agent chooses, nothing is guessed."""
    moment = datetime.combine(day, clock, zone)
    there_and_back = moment.astimezone(ZoneInfo("UTC")).astimezone(zone)
    if there_and_back.replace(tzinfo=None) != moment.replace(tzinfo=None):
        raise DateError(t("agenda.time_skipped", day=day.strftime("%d/%m/%Y"), time=clock.strftime("%H:%M")))
    if moment.replace(fold=1).utcoffset() != moment.utcoffset():
        raise DateError(t("agenda.time_twice", day=day.strftime("%d/%m/%Y"), time=clock.strftime("%H:%M")))
    return moment


class _Reader:
    """Reads one date expression from ``words[position:]``, advancing ``position``."""

    def __init__(self, words: list[str], position: int, now: datetime) -> None:
        self.words, self.position, self.now = words, position, now
        self.zone = now.tzinfo if isinstance(now.tzinfo, ZoneInfo) else ZoneInfo("Europe/Paris")
        self.folded = [fold(w).strip(",;") for w in words]

    def peek(self, offset: int = 0) -> str:
        index = self.position + offset
        return self.folded[index] if index < len(self.folded) else ""

    def starts_expression(self) -> bool:
        word, following = self.peek(), self.peek(1)
        if word in ("aujourd'hui", "demain", "apres-demain", "today", "tomorrow", "midi") \
                or word in WEEKDAYS or word in WEEKDAYS_EN or _TIME.match(word) or _is_numeric_date(word):
            return True
        if word in ("le", "du", "on") and (following.isdigit() or _is_numeric_date(following)
                                           or following in ("1er", "premier")):
            return True
        if word.isdigit() and _month(following) is not None:
            return True
        if word in ("a", "at", "des", "de", "vers") and (_is_time(following) or following == "midi"):
            return True
        if word in ("tous", "toutes", "chaque", "every") and self.peek(1) in (
                "les", *WEEKDAYS, *WEEKDAYS_EN, "jour", "semaine", "mois", "day", "week"):
            return True
        return word == "toute" and following == "la" and self.peek(2) == "journee"

    # --- the expression ----------------------------------------------------------

    def read(self, default_duration: timedelta) -> When:
        day: date | None = None
        clock: time | None = None
        end_clock: time | None = None
        duration: timedelta | None = None
        all_day = False
        recurrence: Recurrence | None = None
        while self.position < len(self.words):
            word = self.peek()
            if day is None and recurrence is None and (found := self._recurrence()) is not None:
                recurrence, day = found
            elif day is None and (found_day := self._day()) is not None:
                day = found_day
            elif clock is None and (found_clock := self._clock()) is not None:
                clock, end_clock = found_clock
            elif duration is None and end_clock is None and word in ("pendant", "durant", "for"):
                self.position += 1
                duration = self._duration()
            elif not all_day and word == "toute" and self.peek(1) == "la" and self.peek(2) == "journee":
                self.position += 3
                all_day = True
            elif recurrence is not None and recurrence.until is None and word in ("jusqu'au", "until"):
                self.position += 1
                until = self._day(after=day)
                if until is None:
                    raise DateError(t("agenda.until_unreadable"))
                recurrence = Recurrence(recurrence.frequency, recurrence.weekday, until)
            else:
                break
        return self._when(day, clock, end_clock, duration, all_day, recurrence, default_duration)

    def _when(self, day: date | None, clock: time | None, end_clock: time | None, duration: timedelta | None,
              all_day: bool, recurrence: Recurrence | None, default_duration: timedelta) -> When:
        if day is None and clock is None and not all_day:
            raise DateError(t("agenda.date_missing"))
        if all_day and clock is not None:
            raise DateError(t("agenda.all_day_with_time"))
        if day is None:
            day = self.now.date()
            if clock is not None and datetime.combine(day, clock, self.zone) <= self.now:
                raise DateError(t("agenda.time_past_today", time=clock.strftime("%H:%M")))
        if all_day or clock is None:
            if duration is not None and duration % timedelta(days=1):
                raise DateError(t("agenda.all_day_with_time"))
            days = duration // timedelta(days=1) if duration else 1
            start = datetime.combine(day, time(0), self.zone)
            return When(start, datetime.combine(day + timedelta(days=days), time(0), self.zone), True, recurrence)
        start = exact_local(day, clock, self.zone)
        if end_clock is not None:
            end = exact_local(day, end_clock, self.zone)
            if end <= start:
                raise DateError(t("agenda.end_before_start", start=clock.strftime("%H:%M"),
                                  end=end_clock.strftime("%H:%M")))
        else:
            end = start + (duration or default_duration)
        if recurrence is not None and recurrence.until is not None and recurrence.until < day:
            raise DateError(t("agenda.until_before_start"))
        return When(start, end, False, recurrence)

    def _recurrence(self) -> tuple[Recurrence, date] | None:
        """« tous les lundis », « chaque jeudi », « tous les jours », « toutes les semaines »."""
        word = self.peek()
        if word not in ("tous", "toutes", "chaque", "every"):
            return None
        offset = 2 if self.peek(1) == "les" else 1
        unit = self.peek(offset).rstrip("s")
        weekday = _weekday(unit) if _weekday(unit) is not None else _weekday(self.peek(offset))
        if weekday is not None:
            self.position += offset + 1
            ahead = (weekday - self.now.weekday()) % 7
            return Recurrence("WEEKLY", weekday), self.now.date() + timedelta(days=ahead)
        frequency = {"jour": "DAILY", "day": "DAILY", "semaine": "WEEKLY", "week": "WEEKLY",
                     "moi": "MONTHLY", "mois": "MONTHLY"}.get(unit)
        if frequency is None:
            return None
        self.position += offset + 1
        return Recurrence(frequency), self.now.date()

    def _day(self, after: date | None = None) -> date | None:
        word = self.peek()
        today = self.now.date()
        relative = {"aujourd'hui": 0, "today": 0, "demain": 1, "tomorrow": 1, "apres-demain": 2}.get(word)
        if relative is not None:
            self.position += 1
            return today + timedelta(days=relative)
        if word in ("le", "du", "on") and (self.peek(1)[:1].isdigit() or self.peek(1) in ("1er", "premier")):
            self.position += 1
            return self._calendar_date(after)
        if (weekday := _weekday(word)) is not None:
            return self._weekday_date(weekday)
        if word[:1].isdigit() and (_is_numeric_date(word) or _month(self.peek(1)) is not None
                                   or _ISO_DATE.match(word)):
            return self._calendar_date(after)
        return None

    def _weekday_date(self, weekday: int) -> date:
        """« jeudi »: the next Thursday; said on a Thursday, asked (today or in a week?)."""
        self.position += 1
        following = self.peek()
        ahead = (weekday - self.now.weekday()) % 7
        if following in ("prochain", "next"):
            self.position += 1
            return self.now.date() + timedelta(days=ahead or 7)
        if ahead == 0:
            name = WEEKDAYS[weekday]
            raise DateError(t("agenda.weekday_ambiguous", day=name,
                              today=self.now.strftime("%d/%m"),
                              next=(self.now.date() + timedelta(days=7)).strftime("%d/%m")))
        return self.now.date() + timedelta(days=ahead)

    def _calendar_date(self, after: date | None) -> date:
        """« 3 décembre [2027] », « 1er mai », « 3/12[/2027] », « 2027-12-03 »; without a year,
        the next such day from today (the reply shows the year)."""
        word = self.peek()
        year: int | None = None
        if (iso := _ISO_DATE.match(word)) is not None:
            self.position += 1
            return _checked_date(int(iso[1]), int(iso[2]), int(iso[3]))
        if (numeric := _NUMERIC_DATE.match(word)) is not None:
            self.position += 1
            day_number, month = int(numeric[1]), int(numeric[2])
            if numeric[3]:
                year = int(numeric[3]) + (2000 if len(numeric[3]) == 2 else 0)
        else:
            day_number = 1 if word in ("1er", "premier") else int(word) if word.isdigit() else 0
            month_found = _month(self.peek(1))
            if month_found is None:
                raise DateError(t("agenda.month_missing", text=" ".join(self.words[self.position:self.position + 2])))
            month = month_found
            self.position += 2
            if self.peek().isdigit() and len(self.peek()) == 4:
                year = int(self.peek())
                self.position += 1
        if year is not None:
            return _checked_date(year, month, day_number)
        reference = after or self.now.date()
        candidate = _checked_date(reference.year, month, day_number, any_year=True)
        if candidate < reference:
            candidate = _checked_date(reference.year + 1, month, day_number, any_year=True)
        return candidate

    def _clock(self) -> tuple[time, time | None] | None:
        """« 18h30 », « à 9h », « midi », « de 14h à 16h », « 14h-16h »."""
        word = self.peek()
        start = self.position
        if word in ("a", "at", "vers", "des", "de"):
            self.position += 1
            word = self.peek()
        if "-" in word and all(_is_time(part) for part in word.split("-", 1)):
            first, second = word.split("-", 1)
            self.position += 1
            return _time_of(first), _time_of(second)
        if not (_TIME.match(word) or word == "midi"):  # « 25h » is a time, wrong: said so
            self.position = start
            return None
        self.position += 1
        begin = time(12) if word == "midi" else _time_of(word)
        if self.peek() in ("a", "jusqu'a", "to", "-") and (_is_time(self.peek(1)) or self.peek(1) == "midi"):
            end_word = self.peek(1)
            self.position += 2
            return begin, time(12) if end_word == "midi" else _time_of(end_word)
        return begin, None

    def _duration(self) -> timedelta:
        """« 2h », « 1h30 », « 45 min », « 2 heures », « 3 jours »."""
        word = self.peek()
        match = _DURATION.match(word)
        if match is None:
            raise DateError(t("agenda.duration_unreadable", text=word[:30]))
        self.position += 1
        number = int(match[1])
        unit = self.peek()
        if word.isdigit() and unit in ("h", "heure", "heures", "hour", "hours"):
            self.position += 1
            amount = timedelta(hours=number)
        elif word.isdigit() and unit in ("min", "minute", "minutes", "mn"):
            self.position += 1
            amount = timedelta(minutes=number)
        elif word.isdigit() and unit in ("jour", "jours", "day", "days"):
            self.position += 1
            amount = timedelta(days=number)
        elif "h" in word:
            amount = timedelta(hours=number, minutes=int(match[2] or 0))
        elif word.isdigit():
            raise DateError(t("agenda.duration_unreadable", text=word[:30]))
        else:
            amount = timedelta(minutes=number)
        if not timedelta(0) < amount <= MAX_DURATION:
            raise DateError(t("agenda.duration_out_of_range"))
        return amount


def _is_time(word: str) -> bool:
    match = _TIME.match(word)
    return match is not None and int(match[1]) < 24 and int(match[2] or match[3] or 0) < 60


def _time_of(word: str) -> time:
    match = _TIME.match(word)
    if match is None or int(match[1]) > 23 or int(match[2] or match[3] or 0) > 59:
        raise DateError(t("agenda.time_unreadable", text=word[:20]))
    return time(int(match[1]), int(match[2] or match[3] or 0))


def _is_numeric_date(word: str) -> bool:
    return _NUMERIC_DATE.match(word) is not None or _ISO_DATE.match(word) is not None


def _weekday(word: str) -> int | None:
    word = word.rstrip("s") if word.rstrip("s") in WEEKDAYS else word
    if word in WEEKDAYS:
        return WEEKDAYS.index(word)
    return WEEKDAYS_EN.index(word) if word in WEEKDAYS_EN else None


def _month(word: str) -> int | None:
    word = word.rstrip(".")
    folded_names = [fold(name) for name in MONTH_NAMES]
    if word in folded_names:
        return folded_names.index(word) + 1
    return MONTH_ABBREVIATIONS.get(word)


def _checked_date(year: int, month: int, day: int, *, any_year: bool = False) -> date:
    """The date, or a French message: « le 31 février n'existe pas »."""
    if not 1 <= month <= 12 or not 1 <= year <= 9998:
        raise DateError(t("agenda.date_impossible", day=day, month=month))
    try:
        return date(year, month, day)
    except ValueError:
        if any_year and month == 2 and day == 29:  # the next year that has one
            for later in range(year + 1, year + 8):
                try:
                    return date(later, 2, 29)
                except ValueError:
                    continue
        raise DateError(t("agenda.date_impossible_named", day=day, month=MONTH_NAMES[month - 1])) from None
