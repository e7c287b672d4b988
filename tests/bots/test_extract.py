"""The text of documents, read for `!doc cherche`: the formats agents use, and hostile ones."""

from __future__ import annotations

import io

from maillage.bots.documents.extract import MAX_XML, extract_text, fold, is_indexed
from maillage.bots.documents.library import excerpt
from tests.harness.office import docx_with_text, odt_with_text, pdf_with_text, zip_bomb_docx


def test_the_text_of_a_pdf_is_read_accents_included() -> None:
    pdf = pdf_with_text("Arrêté municipal n° 2026-114", "Réfection de la voirie, rue des Tanneurs")
    text = extract_text("arrete.pdf", io.BytesIO(pdf))
    assert "Arrêté municipal" in text
    assert "rue des Tanneurs" in text


def test_the_text_of_odt_and_docx_is_read_paragraph_by_paragraph() -> None:
    odt = extract_text("compte-rendu.odt", io.BytesIO(odt_with_text("Conseil communautaire", "Délibération")))
    docx = extract_text("note.DOCX", io.BytesIO(docx_with_text("Budget primitif", "Investissements")))
    assert odt == "Conseil communautaire Délibération"  # paragraphs do not run together
    assert docx == "Budget primitif Investissements"


def test_a_damaged_document_has_no_text_and_raises_nothing() -> None:
    assert extract_text("abime.pdf", io.BytesIO(b"%PDF-1.7\n" + b"\x00garbage" * 100)) == ""
    assert extract_text("abime.docx", io.BytesIO(b"PK\x03\x04 not a zip")) == ""
    assert extract_text("vide.odt", io.BytesIO(docx_with_text("no content.xml in here"))) == ""


def test_a_zip_bomb_stops_at_the_bound() -> None:
    assert extract_text("bombe.docx", io.BytesIO(zip_bomb_docx(MAX_XML + 10))) == ""


def test_only_document_formats_are_read() -> None:
    assert is_indexed("Plan.PDF") and is_indexed("note.docx") and is_indexed("cr.odt")
    assert not is_indexed("photo.jpg") and not is_indexed("archive.zip")
    assert extract_text("photo.jpg", io.BytesIO(b"\xff\xd8\xff")) == ""


def test_folding_keeps_positions_so_excerpts_show_the_original_words() -> None:
    text = "Le conseil a voté la réfection de l’école élémentaire Jules-Ferry pour 2027."
    folded = fold(text)
    assert len(folded) == len(text)
    assert "ecole elementaire" in folded
    # whole words only at both ends, the original spelling shown
    assert excerpt(text, folded, "elementaire", around=15) == "…de l’école élémentaire Jules-Ferry…"
    assert excerpt(text, folded, "conseil", around=200) == text
