"""An HTTP client that keeps cookies as a browser does on http://localhost (Secure ones too:
browsers treat localhost as a secure context, httpx's jar does not), follows nothing by
itself, and logs in through an OIDC provider's form the way a person would."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from urllib.parse import urljoin, urlsplit

import httpx

FORM_ID = re.compile(r'name="form_id" value="([^"]+)"')
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    def __init__(self) -> None:
        self.http = httpx.AsyncClient(timeout=60, follow_redirects=False)
        self.jar: dict[tuple[str, str], str] = {}  # (host:port, name) → value

    async def close(self) -> None:
        await self.http.aclose()

    def _origin(self, url: str) -> str:
        return urlsplit(url).netloc

    def _cookies_for(self, url: str) -> str:
        origin = self._origin(url)
        return "; ".join(f"{name}={value}" for (where, name), value in self.jar.items() if where == origin)

    def _keep(self, response: httpx.Response) -> None:
        origin = self._origin(str(response.request.url))
        for header in response.headers.get_list("set-cookie"):
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(header)
            for name, morsel in parsed.items():
                if morsel.value == "" or morsel["max-age"] == "0" or "1970" in morsel["expires"]:
                    self.jar.pop((origin, name), None)
                else:
                    self.jar[(origin, name)] = morsel.value

    def cookie(self, url: str, name: str) -> str | None:
        return self.jar.get((self._origin(url), name))

    async def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
        cookies = self._cookies_for(url)
        if cookies:
            headers["Cookie"] = cookies
        response = await self.http.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
        self._keep(response)
        return response

    async def get(self, url: str, **kwargs: object) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: object) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def follow(self, response: httpx.Response, limit: int = 10) -> httpx.Response:
        """The redirects followed (GET), as a browser does; the last answer."""
        for _ in range(limit):
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            response = await self.get(urljoin(str(response.request.url), response.headers["location"]))
        raise AssertionError("too many redirects")

    async def sign_in_at_provider(self, form_page: httpx.Response, email: str, password: str) -> httpx.Response:
        """Fill the development provider's form; its answer (a redirect back, or the form again)."""
        match = FORM_ID.search(form_page.text)
        assert match, form_page.text[:500]
        action = urljoin(str(form_page.request.url), "login")
        return await self.post(action, data={"form_id": match.group(1), "email": email, "password": password})


def csrf_of(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match, page.text[:500]
    return match.group(1)
