"""CalDAV for the calendar and task bots: a small async client (``client``) over any
RFC 4791 server (Radicale embedded, Nextcloud, SOGo…), shared by @agenda (VEVENT) and
@projets (VTODO)."""
