"""WhatsApp's wordings: classify and detect per language, expectations written by hand from the
public exports and app strings named in docs/whatsapp-languages.md."""

from __future__ import annotations

import pytest

from tasks.extract.whatsapp_words import AM, LANGUAGES, PM, classify, detect, normalise_marker

CASES = [
    # (language, sender, body, kind, text)
    ("en", "Ann", "see you at 7", "message", "see you at 7"),
    ("en", "Ann", "on my way <This message was edited>", "message", "on my way"),
    ("en", "Ann", "This message was deleted.", "deleted", "This message was deleted."),
    ("en", "Ann", "You deleted this message", "deleted", "You deleted this message"),
    ("en", "Ann", "<Media omitted>", "media", "[media omitted]"),
    ("en", "Ann", "<Media omitted>\nat the beach", "media", "[media omitted]\nat the beach"),
    ("en", "Ann", "null", "media", "[media omitted]"),
    ("en", "Ann", "image omitted", "media", "[image omitted]"),
    ("en", "Ann", "Contact card omitted", "media", "[contact card omitted]"),
    ("en", "Ann", "Resume.pdf • 2 pages document omitted", "media", "[document omitted]"),
    ("en", "Ann", "Missed voice call", "call", "Missed voice call"),
    ("en", "Ann", "Missed group video call", "call", "Missed group video call"),
    ("en", "Grp", 'Ann created group "Trip"', "system", 'Ann created group "Trip"'),
    ("en", "Grp", "You added Zoe", "system", "You added Zoe"),
    ("en", "Ann", "Ann left", "system", "Ann left"),
    ("en", "Bob", "I left", "message", "I left"),
    ("en", None, "Bob left", "system", "Bob left"),
    ("en", "Grp", "Your security code with Ann changed. Tap to learn more.", "system", None),
    (
        "en",
        "Ann",
        "Messages and calls are end-to-end encrypted. No one outside of this chat, not even WhatsApp, can read them.",
        "system",
        None,
    ),
    ("es", "Ana", "Se eliminó este mensaje.", "deleted", "Se eliminó este mensaje."),
    ("es", "Ana", "Eliminaste este mensaje.", "deleted", "Eliminaste este mensaje."),
    ("es", "Ana", "imagen omitida", "media", "[image omitted]"),
    ("es", "Ana", "<Multimedia omitido>", "media", "[media omitted]"),
    # edited marker of a Spanish Android export (cs)
    ("es", "Dan", "me gusta el nombre <Se editó este mensaje.>", "message", "me gusta el nombre"),
    ("es", "Dan", "<Se editó este mensaje.> al principio", "message", "<Se editó este mensaje.> al principio"),
    # the iPhone's other call lines and disappearing-message notices (wji)
    ("en", "Ann", "Missed video call", "call", "Missed video call"),
    ("en", "Grp", "Ann turned off disappearing messages.", "system", None),
    ("en", "Grp", "You turned on disappearing messages.", "system", None),
    ("es", "Ana", "Videollamada perdida", "call", "Videollamada perdida"),
    ("es", "Grp", "Ana activó los mensajes temporales.", "system", None),
    ("pt", "Rui", "Videochamada em grupo perdida", "call", None),
    ("pt", "Grp", "As mensagens temporárias foram ativadas.", "system", None),
    ("hi", "Ravi", "मिस्ड वीडियो कॉल", "call", None),
    ("hi", "Grp", "आपने 'गायब होने वाले मैसेज' मोड को ऑफ़ किया.", "system", None),
    ("id", "Budi", "Panggilan video tak terjawab", "call", None),
    ("id", "Grp", "Budi menyalakan pesan sementara.", "system", None),
    ("de", "Ole", "Verpasster Gruppen-Videoanruf", "call", None),
    ("de", "Grp", "Ole hat selbstlöschende Nachrichten deaktiviert.", "system", None),
    ("fr", "Léa", "Appel vidéo manqué", "call", None),
    ("fr", "Grp", "Vous avez désactivé les messages éphémères.", "system", None),
    ("it", "Gio", "Videochiamata persa", "call", None),
    ("it", "Grp", "Gio ha attivato i messaggi effimeri.", "system", None),
    ("ru", "Оля", "Пропущенный видеозвонок", "call", None),
    ("ru", "Grp", "Оля включил(-а) исчезающие сообщения.", "system", None),
    ("tr", "Ece", "Cevapsız görüntülü arama", "call", None),
    ("tr", "Grp", "Ece süreli mesajları etkinleştirdi.", "system", None),
    ("ar", "سارة", "مكالمة فيديو فائتة", "call", None),
    ("ar", "Grp", "تم تفعيل خاصية الرسائل ذاتية الاختفاء.", "system", None),
    ("nl", "Daan", "Gemist videogesprek", "call", None),
    ("nl", "Grp", "Daan heeft berichten met vervaldatum uitgeschakeld.", "system", None),
    # an iPhone set to Brazilian Portuguese (wji, PT-BR.strings)
    ("pt", "Rui", "imagem ocultada", "media", "[image omitted]"),
    ("pt", "Rui", "figurinha omitida", "media", "[sticker omitted]"),
    ("pt", "Rui", "Chamada de vídeo perdida", "call", None),
    ("pt", "Grp", "Rui mudou o nome do grupo para “Viagem”", "system", None),
    ("pt", "Grp", "Você desativou as mensagens temporárias", "system", None),
    ("es", "Ana", 'Ana creó el grupo "Viaje"', "system", None),
    ("es", None, "Pedro salió", "system", "Pedro salió"),
    ("es", "Ana", "Llamada de voz perdida", "call", None),
    ("pt", "Rui", "Esta mensagem foi apagada.", "deleted", None),
    ("pt", "Rui", "imagem não revelada", "media", "[image omitted]"),
    ("pt", "Rui", "<Mídia omitida>", "media", "[media omitted]"),
    ("pt", None, "Rui saiu", "system", "Rui saiu"),
    ("hi", "Raj", "यह मैसेज डिलीट कर दिया गया है.", "deleted", None),
    ("hi", "Raj", "फ़ोटो हटाई गई", "media", "[image omitted]"),
    ("hi", "Raj", "<मीडिया के बिना>", "media", "[media omitted]"),
    ("id", "Budi", "Pesan ini dihapus.", "deleted", None),
    ("id", "Budi", "gambar tidak disertakan", "media", "[image omitted]"),
    ("id", "Budi", "<Media tidak disertakan>", "media", "[media omitted]"),
    ("id", "Budi", "<terlampir: 00000012-PHOTO-2022-03-27.jpg>", "media", "[file: 00000012-PHOTO-2022-03-27.jpg]"),
    ("de", "Ole", "Diese Nachricht wurde gelöscht.", "deleted", None),
    ("de", "Ole", "Bild weggelassen", "media", "[image omitted]"),
    ("de", "Ole", "<Medien ausgeschlossen>", "media", "[media omitted]"),
    ("de", "Ole", "IMG-20250330-WA0001.jpg (Datei angehängt)", "media", "[file: IMG-20250330-WA0001.jpg]"),
    ("de", None, "Ole hat die Gruppe verlassen", "system", None),
    ("de", "Ole", "Verpasster Sprachanruf", "call", None),
    ("fr", "Léa", "Ce message a été supprimé.", "deleted", None),
    ("fr", "Léa", "image absente", "media", "[image omitted]"),
    ("fr", "Léa", "<Médias omis>", "media", "[media omitted]"),
    ("it", "Gio", "Questo messaggio è stato eliminato.", "deleted", None),
    ("it", "Gio", "immagine omessa", "media", "[image omitted]"),
    ("it", "Gio", "<Media omessi>", "media", "[media omitted]"),
    ("ru", "Oleg", "Данное сообщение удалено.", "deleted", None),
    ("ru", "Oleg", "изображение отсутствует", "media", "[image omitted]"),
    ("ru", "Oleg", "<Без медиафайлов>", "media", "[media omitted]"),
    ("ru", "Oleg", "Alex.vcf (файл добавлен)", "media", "[file: Alex.vcf]"),
    ("tr", "Emirço", "Emirço bu grubun simgesini değiştirdi", "system", None),
    ("tr", "mezun A", "Emirço sizi ekledi", "system", None),
    ("tr", "Emirço", 'Emirço grup adını "9/A" olarak değiştirdi', "system", None),
    ("tr", "Bora", "görüntü dahil edilmedi", "media", "[image omitted]"),
    ("tr", "Bora", "Bu mesaj silindi", "deleted", None),
    ("ar", "Sami", "تم حذف هذه الرسالة.", "deleted", None),
    ("ar", "Sami", "لم يتم إدراج الصورة", "media", "[image omitted]"),
    ("ar", "Sami", "<تم استبعاد الوسائط>", "media", "[media omitted]"),
    ("nl", "Dmitry S", "Dit bericht is verwijderd", "deleted", None),
    ("nl", "Dmitry S", "<Media weggelaten>", "media", "[media omitted]"),
    ("nl", "Elon", "Alex.vcf (bestand bijgevoegd)", "media", "[file: Alex.vcf]"),
    (
        "nl",
        None,
        "Berichten en oproepen worden end-to-end versleuteld. Niemand buiten deze chat kan ze lezen.",
        "system",
        None,
    ),
]


@pytest.mark.parametrize(("code", "sender", "body", "kind", "text"), CASES)
def test_classify(code: str, sender: str | None, body: str, kind: str, text: str | None) -> None:
    got = classify(body, LANGUAGES[code], sender)
    assert got[0] == kind, got
    assert got[1] == (body if text is None else text)


def test_attached_file_name() -> None:
    assert classify("<attached: 00000012-PHOTO-2023.jpg>", LANGUAGES["en"], "Ann") == (
        "media",
        "[file: 00000012-PHOTO-2023.jpg]",
        "00000012-PHOTO-2023.jpg",
    )


def test_twelve_languages() -> None:
    assert set(LANGUAGES) == {"en", "es", "pt", "hi", "id", "de", "fr", "it", "ru", "tr", "ar", "nl"}


@pytest.mark.parametrize(
    ("bodies", "code"),
    [
        ([("Ole", "Bild weggelassen"), ("Ole", "Hallo")], "de"),
        ([("Ana", "hola"), ("Ana", "<Multimedia omitido>")], "es"),
        ([("D", "<Media weggelaten>")], "nl"),
        ([("O", "<Без медиафайлов>")], "ru"),
        ([("A", "<Media omitted>")], "en"),
        ([("S", "لم يتم إدراج الصورة")], "ar"),
        ([("A", "hi"), ("B", "null"), ("A", "IMG-1.jpg (file attached)")], "en"),
        ([("A", "hi"), ("B", "hello")], None),
    ],
)
def test_detect(bodies: list[tuple[str | None, str]], code: str | None) -> None:
    assert detect(bodies) == code


def test_markers() -> None:
    assert normalise_marker("a.\u202fm.") == "am" and normalise_marker("p. m.") == "pm"
    assert {"am", "ص", "öö"} <= AM and {"pm", "م", "ös"} <= PM
    assert normalise_marker("a.m.") in AM
