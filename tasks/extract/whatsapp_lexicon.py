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
- cldr: 12-hour markers of CLDR's gregorian dayPeriods (unicode-org/cldr common/main/<lang>.xml),
  as shipped in Babel's locale data (python-babel/babel)
"""

from __future__ import annotations

from typing import Any

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
        "edited": (),
    },
}
