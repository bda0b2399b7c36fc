"""WhatsApp's own wordings, language by language: the raw data `whatsapp_words` compiles.

Each string is a fact copied from a public source (docs/whatsapp-languages.md names the
repository and path of every one). Templates: `{A}` is the person a notice is about (its
actor, or "You"), `{N}` other names or numbers, `{Q}` a quoted group name or subject (its
quotes included: WhatsApp writes "..", “..” or '..' by language); everything else is literal.

Sources, by key (repository: path):
- gb: HassanSardar/GBWhatsApp_Raw: res/values*/strings.xml (Android app strings, a 2017 build)
- wa24: Meghdut-Mandal/com.whatsapp_2.24.6.77: resources/res/values/strings.xml (English only)
- fx: borgoat/artificialstupidity: packages/whatsapp_export_parser/test/fixtures/ (real
  exports: languages/*.txt, ios/*.txt, android/*.txt, chats_unique/*.txt)
- ca: mlomb/chat-analytics: pipeline/parse/parsers/WhatsApp.ts
- pd: PetengDedet/WhatsApp-Analyzer: patterns.py
- mtln16: mtln/chat-export issue #16 (a Turkish iPhone export quoted in the thread)
- wji: starkdmi/whats_json: tool/patterns_generator/data/iOS Localizables/<LANG>.strings (the
  iPhone app's localizable strings, 2023; in `whatsapp_lexicon_ios`)
- cs: edd86/chat_stats: test/whatsapp_parser_test.dart (a Spanish Android export in a parser's
  test: `<Se editó este mensaje.>`)
- cldr: 12-hour markers of CLDR's gregorian dayPeriods (unicode-org/cldr common/main/<lang>.xml),
  as shipped in Babel's locale data (python-babel/babel)
"""

from __future__ import annotations

from typing import Any

from tasks.extract.whatsapp_lexicon_ios import IOS
from tasks.extract.whatsapp_lexicon_more import MORE

# kind of an iPhone "image omitted" placeholder -> the English word chatlines.py writes
OMITTED_KINDS = ("image", "video", "audio", "gif", "sticker", "document", "contact card")

LEXICON: dict[str, dict[str, Any]] = {
    "en": {
        "name": "English",
        "you": ("You", "you"),
        "am": ("AM",),
        "pm": ("PM",),
        "encryption": (
            "Messages and calls are end-to-end encrypted",  # fx: languages/english_*.txt
            "Messages to this group are now secured with end-to-end encryption",  # gb
            "Messages to this chat and calls are now secured with end-to-end encryption",  # gb
            "Messages you send to this chat and calls are now secured with end-to-end encryption",  # fx: chats_unique
            "Messages you send to this group are now secured with end-to-end encryption",  # fx: chats_unique
        ),
        "notices": (  # gb, then fx: chats_unique (newer wordings)
            "{A} created group {Q}",
            "{A} changed the group description",
            "{A} was added",
            "You were added",
            "{A} changed from {N} to {N}",
            "{A} changed to {N}",
            "{A} joined using this group's invite link",
            "{A} left",
            "{A} was removed",
            "You were removed",
            "{A} added {N}",
            "{A} removed {N}",
            "{A} changed the subject to {Q}",
            "{A} changed the subject from {Q} to {Q}",
            "{A}'s security code changed. Tap for more info.",
            "{A} changed this group's icon",
            "{A} deleted this group's icon",
            "You're now an admin",
            "You're no longer an admin",
            "Your security code with {N} changed. Tap to learn more.",
            "{A}'s security code changed. Tap to learn more.",
            "{A} changed this group's settings to allow only admins to send messages to this group",
            "{A} changed this group's settings to allow all participants to send messages to this group",
            "{A} revoked this group's invite link",
            "This chat is with a business account. Tap to learn more.",
        ),
        "calls": (  # gb (missed_voice_call), fx: chats_unique
            "Missed voice call",
            "Missed video call",
            "Missed group voice call",
            "Missed group video call",
            "{A} started a call",
        ),
        "deleted": ("This message was deleted", "You deleted this message"),  # gb, fx (with ".")
        "media": ("<Media omitted>",),  # gb, fx
        "omitted": {  # fx: languages/english_ios.txt
            "image omitted": "image",
            "video omitted": "video",
            "audio omitted": "audio",
            "GIF omitted": "gif",
            "sticker omitted": "sticker",
            "document omitted": "document",
            "Contact card omitted": "contact card",
        },
        "attached": ("attached",),  # fx: chats_unique ("<attached: 00000012-PHOTO-...>")
        "file_attached": ("file attached",),  # gb, fx
        "edited": ("<This message was edited>",),  # wa24
    },
    "es": {
        "name": "Spanish",
        "you": ("Tú", "te"),
        "am": ("a. m.", "a.\u202fm.", "a.\u00a0m."),
        "pm": ("p. m.", "p.\u202fm.", "p.\u00a0m."),
        "encryption": (
            "Los mensajes y las llamadas están cifrados de extremo a extremo",  # fx, ca
            "Los mensajes en este grupo ahora están protegidos con cifrado de extremo a extremo",  # gb
            "Los mensajes y llamadas en este chat ahora están protegidos con cifrado de extremo a extremo",  # gb
        ),
        "notices": (  # gb
            "{A} creó el grupo {Q}",
            "Creaste el grupo {Q}",
            "{A} cambió la descripción del grupo",
            "Cambiaste la descripción del grupo",
            "Se añadió a {A}",
            "Se te añadió al grupo",
            "{A} cambió de {N} a {N}",
            "{A} cambió a {N}",
            "{A} se unió usando el enlace de invitación de este grupo",
            "Te uniste usando el enlace de invitación de este grupo",
            "{A} salió",
            "Saliste",
            "Se eliminó a {A}",
            "Se te eliminó del grupo",
            "{A} añadió a {N}",
            "{A} te añadió",
            "{A} eliminó a {N}",
            "{A} te eliminó",
            "Añadiste a {N}",
            "Eliminaste a {N}",
            "{A} cambió el asunto a {Q}",
            "{A} cambió el asunto de {Q} a {Q}",
            "Cambiaste el asunto a {Q}",
            "El código de seguridad de {A} cambió. Toca para más información.",
            "{A} cambió el icono de este grupo",
            "Cambiaste el icono del grupo",
            "{A} eliminó el icono del grupo",
            "Eliminaste el icono de este grupo",
            "Ahora eres un administrador",
            "Ya no eres administrador",
        ),
        "calls": ("Llamada de voz perdida",),  # gb
        "deleted": (
            "Este mensaje fue eliminado",  # gb
            "Eliminaste este mensaje",  # gb, fx
            "Se eliminó este mensaje",  # fx: languages/spanish_ios.txt
        ),
        "media": ("<Multimedia omitido>", "<Archivo omitido>"),  # ca, gb
        "omitted": {  # fx: languages/spanish_ios.txt, ca
            "imagen omitida": "image",
            "Video omitido": "video",
            "video omitido": "video",
            "audio omitido": "audio",
            "GIF omitido": "gif",
            "sticker omitido": "sticker",
            "documento omitido": "document",
            "Tarjeta de contacto omitida": "contact card",
        },
        "attached": (),
        "file_attached": ("archivo adjuntado",),  # gb
        "edited": ("<Se editó este mensaje.>",),  # cs (an Android export)
    },
    "pt": {
        "name": "Portuguese",
        "you": ("Você", "você"),
        "am": ("AM",),
        "pm": ("PM",),
        "encryption": (
            "As mensagens e chamadas são encriptadas ponto a ponto",
            "As mensagens enviadas a este grupo estão agora protegidas com a criptografia de ponta-a-ponta",
            "As mensagens e chamadas desta conversa estão agora seguras com criptografia de ponta-a-ponta",
        ),
        "notices": (
            "{A} criou o grupo {Q}",
            "Você criou o grupo {Q}",
            "{A} alterou a descrição do grupo",
            "Você alterou a descrição do grupo",
            "{A} foi adicionado",
            "Você foi adicionado",
            "{A} alterado de {N} para {N}",
            "{A} alterado para {N}",
            "{A} entrou usando o link de convite deste grupo",
            "Você entrou usando o link de convite deste grupo",
            "{A} saiu",
            "Você saiu",
            "{A} foi removido",
            "Você foi removido",
            "{A} adicionou {N}",
            "{A} adicionou você",
            "{A} removeu {N}",
            "{A} removeu você",
            "Você adicionou {N}",
            "Você removeu {N}",
            "{A} alterou o nome do grupo para {Q}",
            "{A} alterou o nome de {Q} para {Q}",
            "Você alterou o nome para {Q}",
            "O código de segurança de {A} mudou. Toque para mais informações.",
            "{A} alterou a imagem deste grupo",
            "Você alterou a imagem deste grupo",
            "{A} apagou a imagem deste grupo",
            "Você apagou a imagem deste grupo",
            "Você agora é um administrador",
            "Você não é mais um administrador",
        ),
        "calls": ("Chamada de voz perdida",),
        "deleted": ("Esta mensagem foi apagada", "Você apagou esta mensagem", "Apagou esta mensagem"),
        "media": ("<Mídia omitida>", "<ficheiro não revelado>"),
        "omitted": {
            "imagem não revelada": "image",
            "vídeo não revelado": "video",
            "ficheiro de áudio não revelado": "audio",
            "GIF não revelada": "gif",
            "sticker não revelado": "sticker",
            "documento não revelado": "document",
            "Contacto não revelado": "contact card",
        },
        "attached": (),
        "file_attached": ("arquivo anexado",),
        "edited": (),
    },
    "hi": {
        "name": "Hindi",
        "you": ("आपने",),
        "am": ("am",),
        "pm": ("pm",),
        "encryption": ("मैसेजेस और कॉल्स एंड-टू-एंड एन्क्रिप्टेड हैं",),
        "notices": (),
        "calls": (),
        "deleted": ("आपने यह मैसेज डिलीट किया", "यह मैसेज डिलीट कर दिया गया है"),
        "media": ("<मीडिया के बिना>",),
        "omitted": {
            "फ़ोटो हटाई गई": "image",
            "वीडियो छोड़ा गया": "video",
            "ऑडियो हटाई गयी": "audio",
            "GIF छोड़ा गया": "gif",
            "स्टिकर छोड़ा गया": "sticker",
            "डॉक्यूमेंट छोड़ा गया": "document",
            "कॉन्टैक्ट कार्ड छोड़ा गया": "contact card",
        },
        "attached": (),
        "file_attached": (),
        "edited": (),
    },
    "id": {
        "name": "Indonesian",
        "you": ("Anda",),
        "am": ("AM",),
        "pm": ("PM",),
        "encryption": (
            "Pesan dan panggilan terenkripsi secara end-to-end",
            "Pesan-pesan yang dikirimkan ke grup ini kini diamankan dengan enkripsi end-to-end",
            "Pesan-pesan yang dikirimkan ke chat ini dan panggilan kini diamankan dengan enkripsi end-to-end",
        ),
        "notices": (
            "{A} membuat grup {Q}",
            "Anda membuat grup {Q}",
            "{A} telah mengubah deskripsi grup",
            "Anda telah mengubah deskripsi grup",
            "{A} telah ditambahkan",
            "Anda telah ditambahkan",
            "{A} telah mengganti nomor dari {N} ke {N}",
            "{A} diganti menjadi {N}",
            "{A} telah bergabung menggunakan tautan undangan grup ini",
            "Anda telah bergabung menggunakan tautan undangan grup ini",
            "{A} keluar",
            "Anda keluar",
            "{A} telah dikeluarkan",
            "Anda telah dikeluarkan",
            "{A} menambahkan {N}",
            "{A} telah menambahkan Anda",
            "{A} mengeluarkan {N}",
            "{A} telah mengeluarkan Anda",
            "Anda menambahkan {N}",
            "Anda mengeluarkan {N}",
            "{A} mengubah subjek menjadi {Q}",
            "{A} telah mengubah subjek dari {Q} menjadi {Q}",
            "Anda telah mengubah subjek menjadi {Q}",
            "Kode keamanan {A} berubah. Ketuk untuk info selengkapnya.",
            "{A} telah mengubah ikon grup ini",
            "Anda mengubah ikon grup ini",
            "{A} telah menghapus ikon grup ini",
            "Anda menghapus ikon grup ini",
            "Anda sekarang adalah admin",
            "Anda bukan lagi seorang admin",
        ),
        "calls": ("Panggilan suara tak terjawab",),
        "deleted": (
            "Pesan ini telah dihapus",
            "Anda telah menghapus pesan ini",
            "Anda menghapus pesan ini",
            "Pesan ini dihapus",
        ),
        "media": ("<Media tidak disertakan>",),
        "omitted": {
            "gambar tidak disertakan": "image",
            "video tidak disertakan": "video",
            "audio tidak disertakan": "audio",
            "GIF tidak disertakan": "gif",
            "stiker tidak disertakan": "sticker",
            "dokumen tidak disertakan": "document",
            "Kartu kontak tidak disertakan": "contact card",
        },
        "attached": ("terlampir",),
        "file_attached": ("file terlampir",),
        "edited": (),
    },
    "de": {
        "name": "German",
        "you": ("Du", "dich"),
        "am": ("AM",),
        "pm": ("PM",),
        "encryption": (
            "Nachrichten und Anrufe sind Ende-zu-Ende-verschlüsselt",
            "Nachrichten an diese Gruppe sind jetzt mit Ende-zu-Ende-Verschlüsselung geschützt",
            "Nachrichten in diesem Chat sowie Anrufe sind jetzt mit Ende-zu-Ende-Verschlüsselung geschützt",
        ),
        "notices": (
            "{A} hat die Gruppe {Q} erstellt",
            "Du hast die Gruppe {Q} erstellt",
            "{A} hat die Gruppenbeschreibung geändert",
            "Du hast die Gruppenbeschreibung geändert",
            "{A} wurde hinzugefügt",
            "Du wurdest hinzugefügt",
            "{A} hat von {N} zu {N} gewechselt",
            "{A} hat zu {N} gewechselt",
            "{A} ist dieser Gruppe mit dem Einladungslink beigetreten",
            "Du bist dieser Gruppe mit dem Einladungslink beigetreten",
            "{A} hat die Gruppe verlassen",
            "Du hast die Gruppe verlassen",
            "{A} wurde entfernt",
            "Du wurdest entfernt",
            "{A} hat {N} hinzugefügt",
            "{A} hat dich hinzugefügt",
            "{A} hat {N} entfernt",
            "{A} hat dich entfernt",
            "Du hast {N} hinzugefügt",
            "Du hast {N} entfernt",
            "{A} hat den Betreff zu {Q} geändert",
            "{A} hat den Betreff von {Q} zu {Q} geändert",
            "Du hast den Betreff zu {Q} geändert",
            "Die Sicherheitsnummer von {A} hat sich geändert. Tippe für mehr Infos.",
            "{A} hat das Gruppenbild geändert",
            "Du hast das Gruppenbild geändert",
            "{A} hat das Gruppenbild gelöscht",
            "Du hast das Gruppenbild gelöscht",
            "Du bist jetzt ein Admin",
            "Du bist kein Admin mehr",
        ),
        "calls": ("Verpasster Sprachanruf",),
        "deleted": ("Diese Nachricht wurde gelöscht", "Du hast diese Nachricht gelöscht"),
        "media": ("<Medien ausgeschlossen>", "<Medien weggelassen>"),
        "omitted": {
            "Bild weggelassen": "image",
            "Video weggelassen": "video",
            "Audio weggelassen": "audio",
            "GIF weggelassen": "gif",
            "Sticker weggelassen": "sticker",
            "Dokument weggelassen": "document",
            "Kontaktkarte ausgelassen": "contact card",
        },
        "attached": (),
        "file_attached": ("Datei angehängt",),
        "edited": (),
    },
}
LEXICON.update(MORE)
for _code, _ios in IOS.items():  # the iPhone's wordings (wji), after each language's own
    for _key, _value in _ios.items():
        if isinstance(_value, dict):
            LEXICON[_code][_key] = {**LEXICON[_code].get(_key, {}), **_value}
        else:
            LEXICON[_code][_key] = tuple(dict.fromkeys((*LEXICON[_code].get(_key, ()), *_value)))
