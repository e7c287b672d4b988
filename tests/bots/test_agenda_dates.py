"""Dates written in French, as agents type them: what they mean, and what is refused or asked."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from maillage.bots.agenda.dates import DateError, read_event, read_when
from tests.messages import assert_french

pytestmark = pytest.mark.usefixtures("in_french")

PARIS = ZoneInfo("Europe/Paris")
WEDNESDAY = datetime(2026, 11, 25, 10, 0, tzinfo=PARIS)  # a Wednesday, 10:00


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=PARIS)


def refused(text: str, now: datetime = WEDNESDAY) -> str:
    with pytest.raises(DateError) as caught:
        read_event(text, now)
    message = str(caught.value)
    assert_french(message, "agenda.")
    return message


def test_title_date_time_duration_and_place() -> None:
    event = read_event("Conseil municipal jeudi 18h30 pendant 2h salle du conseil", WEDNESDAY)
    assert (event.title, event.place) == ("Conseil municipal", "salle du conseil")
    assert (event.when.start, event.when.end) == (at(2026, 11, 26, 18, 30), at(2026, 11, 26, 20, 30))
    assert not event.when.all_day and event.when.recurrence is None


@pytest.mark.parametrize(("text", "start", "end"), [
    ("Point demain 9h", at(2026, 11, 26, 9), at(2026, 11, 26, 10)),
    ("Point après-demain à 14h", at(2026, 11, 27, 14), at(2026, 11, 27, 15)),
    ("Réunion le 3/12 de 14h à 16h", at(2026, 12, 3, 14), at(2026, 12, 3, 16)),
    ("Réunion le 3/12 14h-16h", at(2026, 12, 3, 14), at(2026, 12, 3, 16)),
    ("Bilan vendredi prochain 11:15 pendant 45 min", at(2026, 11, 27, 11, 15), at(2026, 11, 27, 12)),
    ("Visite le 1er décembre 2027 à midi pendant 1h30", at(2027, 12, 1, 12), at(2027, 12, 1, 13, 30)),
    ("Atelier 2026-12-10 9h", at(2026, 12, 10, 9), at(2026, 12, 10, 10)),
    ("Café 11h", at(2026, 11, 25, 11), at(2026, 11, 25, 12)),  # later today
])
def test_dates_and_times(text: str, start: datetime, end: datetime) -> None:
    when = read_event(text, WEDNESDAY).when
    assert (when.start, when.end) == (start, end)


def test_a_date_without_a_year_is_the_next_one() -> None:
    assert read_event("Vœux le 15 janvier 18h", WEDNESDAY).when.start == at(2027, 1, 15, 18)
    assert read_event("Fête le 3 décembre toute la journée", WEDNESDAY).when.start == at(2026, 12, 3)


def test_whole_days() -> None:
    when = read_event("Formation le 1er décembre pendant 3 jours à Lyon", WEDNESDAY)
    assert when.when.all_day and (when.when.start, when.when.end) == (at(2026, 12, 1), at(2026, 12, 4))
    assert when.place == "à Lyon"


def test_repetitions() -> None:
    weekly = read_event("Réunion hebdo tous les lundis à 9h jusqu'au 30 juin", WEDNESDAY).when
    assert weekly.start == at(2026, 11, 30, 9)
    assert weekly.recurrence is not None and weekly.recurrence.until == date(2027, 6, 30)
    assert weekly.recurrence.rrule(PARIS)["BYDAY"] == "MO"
    daily = read_event("Point météo tous les jours 8h30", WEDNESDAY).when
    assert daily.recurrence is not None and daily.recurrence.frequency == "DAILY"
    assert read_event("Permanence chaque jeudi 14h", WEDNESDAY).when.start == at(2026, 11, 26, 14)


def test_across_the_change_to_winter_time_the_wall_clock_time_stays() -> None:
    # 9h on the Saturday before and the Monday after clocks go back: both 9h in Paris.
    saturday = read_event("A le 24/10/2026 9h", WEDNESDAY).when.start
    monday = read_event("B le 26/10/2026 9h", WEDNESDAY).when.start
    assert (saturday.hour, monday.hour) == (9, 9)
    assert saturday.utcoffset() == timedelta(hours=2) and monday.utcoffset() == timedelta(hours=1)


def test_the_same_weekday_as_today_is_asked_not_guessed() -> None:
    message = refused("Visite mercredi 10h")
    assert "aujourd’hui (25/11)" in message and "(02/12)" in message
    assert read_event("Visite mercredi prochain 10h", WEDNESDAY).when.start == at(2026, 12, 2, 10)
    assert read_event("Visite aujourd'hui 15h", WEDNESDAY).when.start == at(2026, 11, 25, 15)


@pytest.mark.parametrize(("text", "says"), [
    ("Atelier le 31 février 10h", "31 février n’existe pas"),
    ("Atelier le 30/2 10h", "30 février"),
    ("Réunion le 28/03/2027 2h30", "n’existe pas le 28/03/2027"),  # clocks go forward
    ("Réunion le 31/10/2027 2h30", "existe deux fois"),  # clocks go back
    ("Rendez-vous demain de 16h à 14h", "La fin (14:00) vient avant le début (16:00)"),
    ("Café 9h", "déjà plus de 09:00"),
    ("Réunion sans date", "Quand ?"),
    ("demain 9h", "Quel titre ?"),
    ("Réunion demain 9h pendant 40 jours", "entre une minute et 31 jours"),
    ("Réunion demain 9h pendant longtemps", "Durée non comprise"),
    ("Réunion demain 25h", "Heure non comprise : « 25h »"),
    ("Fête demain 9h toute la journée", "toute la journée"),
    ("Cours tous les lundis 9h jusqu'au 1/11/2026", "fin de la répétition"),
    ("Cours tous les lundis 9h jusqu'au bout", "Jusqu’à quand"),
])
def test_what_is_impossible_is_refused_in_french(text: str, says: str) -> None:
    assert says in refused(text)


def test_a_date_alone_for_moving_an_event() -> None:
    when = read_when("à vendredi 10h", WEDNESDAY, duration=timedelta(minutes=90))
    assert (when.start, when.end) == (at(2026, 11, 27, 10), at(2026, 11, 27, 11, 30))
    with pytest.raises(DateError):
        read_when("vendredi 10h et demi", WEDNESDAY)


WORDS = st.sampled_from([
    "Réunion", "demain", "aujourd'hui", "après-demain", "lundi", "mercredi", "dimanche", "prochain", "le", "1er",
    "3", "31", "29", "février", "mars", "octobre", "décembre", "2027", "3/12", "29/2", "31/4", "2027-03-28",
    "à", "de", "9h", "2h30", "02:30", "18h30", "midi", "-", "pendant", "2h", "45", "min", "jours", "toute", "la",
    "journée", "tous", "les", "lundis", "jours", "chaque", "jusqu'au", "30", "juin", "salle", "0h", "23:59", "24h",
])
NOWS = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda moment: moment.replace(tzinfo=PARIS))


@settings(max_examples=1500, deadline=None)
@given(words=st.lists(st.one_of(WORDS, st.text(max_size=12)), max_size=12), now=NOWS)
@example(words=["Réunion", "le", "28/03/2027", "2h30"], now=WEDNESDAY)
@example(words=["Réunion", "le", "29", "février", "9h"], now=WEDNESDAY)
def test_any_text_gives_a_real_time_in_paris_or_a_french_message(words: list[str], now: datetime) -> None:
    try:
        event = read_event(" ".join(words), now)
    except DateError as error:
        assert_french(str(error), "agenda.", typed=" ".join(words))
        return
    for moment in (event.when.start, event.when.end):
        # a wall-clock time that exists, once, in Europe/Paris
        round_trip = moment.astimezone(ZoneInfo("UTC")).astimezone(PARIS)
        assert round_trip.replace(tzinfo=None) == moment.replace(tzinfo=None)
    assert event.when.end > event.when.start
    assert event.title
