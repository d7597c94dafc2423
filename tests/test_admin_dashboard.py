"""The support dashboard over HTTP: admins only (refused like everywhere else), search by part
of a Matrix user, email or account id in any case, bounded; merge and reverse only after a
confirmation page naming both accounts; everything audited. One bridge per database."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from html import unescape

import attrs
import pytest
import pytest_asyncio

from bridge.db.login_identity import LoginIdentity
from bridge.security.permissions import Level, Permissions

from .support.dashboard import ADMIN_NAME, DashboardEnv, dashboard_env, db_kind
from .support.web import Browser

pytestmark = pytest.mark.asyncio(loop_scope="module")
__all__ = ["dashboard_env", "db_kind"]


@attrs.define
class Staff:
    env: DashboardEnv
    admin: Browser
    outsider: Browser
    outsider_mxid: str


async def signed_in(env: DashboardEnv, user) -> Browser:
    web = Browser(env.base)
    status, page = await web.matrix_sign_in(await env.login_token(user))
    assert status == 200 and "Account Management" in page
    return web


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def staff(dashboard_env: DashboardEnv) -> AsyncIterator[Staff]:
    outsider = await dashboard_env.user("outsider")
    admin_web = await signed_in(dashboard_env, dashboard_env.admin)
    outsider_web = await signed_in(dashboard_env, outsider)
    yield Staff(dashboard_env, admin_web, outsider_web, outsider.mxid)
    await admin_web.close()
    await outsider_web.close()


async def add_account(env: DashboardEnv, localpart: str, email: str | None = None) -> str:
    """An account with a Matrix user (and a sign-in with `email`), as linking leaves them."""
    account = await env.bridge.accounts.for_matrix_user(f"@{localpart}:localhost")
    if email:
        await env.bridge.storage.identities.add(LoginIdentity(
            "https://idp.example", secrets.token_hex(8), "idp", account.id, email, True, True,
            "signin"))
    return account.id


def found(page: str) -> set[str]:
    return set(re.findall(r'href="/admin/accounts/(acct_[^"]+)"', page))


def text(page: str) -> str:
    """What a person reads: the page without its tags."""
    return unescape(re.sub(r"<[^>]+>", "", page))


def csrf_of(page: str) -> str:
    return unescape(re.search(r'name="csrf" value="([^"]+)"', page).group(1))


async def test_search_by_part_of_localpart_email_or_id_in_any_case(staff: Staff):
    env, web = staff.env, staff.admin
    tag = secrets.token_hex(3)
    zed = await add_account(env, f"zed.{tag}", f"Zed.Person.{tag}@Example.org")
    other = await add_account(env, f"yan{tag}x")

    status, page = await web.get("/admin/dashboard")
    # The search field is labelled and described.
    assert status == 200 and '<label for="q">Find an account</label>' in page
    assert 'aria-describedby="q-hint"' in page

    # Part of the localpart, upper case; part of the email; part of the id.
    for query in (f"ZED.{tag.upper()}", f"person.{tag}@EXAMPLE", zed[5:15].upper()):
        status, page = await web.get(f"/admin/dashboard?q={query}")
        assert status == 200 and found(page) == {zed}, query
    status, page = await web.get(f"/admin/dashboard?q={tag}")
    assert found(page) == {zed, other}
    # The results name each account's Matrix users and sign-in emails.
    assert f"@zed.{tag}:localhost" in page and f"Zed.Person.{tag}@Example.org" in page

    # LIKE's wildcards are plain characters: "_" and "%" match only themselves.
    for query in (f"zed_{tag}", f"zed%{tag}", f"yan{tag}_"):
        status, page = await web.get(f"/admin/dashboard?q={query.replace('%', '%25')}")
        assert status == 200 and not found(page) and 'id="no-match"' in page, query

    status, page = await web.get(f"/admin/dashboard?q={'x' * 256}")
    assert status == 400 and "at most 255 characters" in page

    records = await env.bridge.security.audit.latest(20, who=env.admin.mxid)
    assert any('"searched_accounts"' in r.details and tag in r.details for r in records)


async def test_search_results_are_bounded(staff: Staff):
    env, web = staff.env, staff.admin
    tag = secrets.token_hex(3)
    made = [await add_account(env, f"many{tag}n{i}") for i in range(21)]
    status, page = await web.get(f"/admin/dashboard?q=MANY{tag}")
    assert status == 200 and len(found(page)) == 20 and found(page) <= set(made)
    assert "Only the newest 20 matches are shown" in page
    status, page = await web.get(f"/admin/dashboard?q=many{tag}n20")
    assert found(page) == {made[20]} and "Only the newest" not in page


async def test_non_admins_are_refused_everywhere_as_by_the_bot(staff: Staff):
    env, web = staff.env, staff.outsider
    into, source = await add_account(env, f"in{secrets.token_hex(3)}"), await add_account(
        env, f"out{secrets.token_hex(3)}")
    merge = await env.bridge.merges.merge(into, source, actor=env.admin.mxid)
    # The same words as the bot and the provisioning API give (one table, one rule).
    refusal = Permissions({"localhost": "user"}).refusal("admin", staff.outsider_mxid,
                                                         Level.USER)
    csrf = await web.csrf("/account/settings")
    for method, path, form in (
            ("GET", "/admin/dashboard?q=in", None),
            ("GET", f"/admin/accounts/{into}", None),
            ("GET", f"/admin/merge?into={into}&from={source}", None),
            ("GET", f"/admin/unmerge?merge_id={merge.merge_id}", None),
            ("POST", "/admin/merge", {"into": source, "from": into, "csrf": csrf}),
            ("POST", "/admin/unmerge", {"merge_id": merge.merge_id, "csrf": csrf})):
        status, page = (await web.get(path) if method == "GET"
                        else await web.post_form(path, form))
        assert status == 403, (method, path)
        assert unescape(refusal) in unescape(page) and "for bridge admins" in page
    # Nothing happened.
    assert (await env.bridge.storage.merges.get(merge.merge_id)).reversed_at is None
    # Not signed in: the sign-in page, nothing else.
    anonymous = Browser(env.base)
    try:
        status, page = await anonymous.get(f"/admin/accounts/{into}")
        assert status == 200 and "Sign in to RelayForge" in page and into not in page
    finally:
        await anonymous.close()


async def test_merge_and_reverse_only_after_a_confirmation_naming_both(staff: Staff):
    env, web = staff.env, staff.admin
    tag = secrets.token_hex(3)
    keep = await add_account(env, f"keep{tag}", f"keep{tag}@example.org")
    gone = await add_account(env, f"gone{tag}")
    await env.bridge.storage.accounts.set_credits(gone, 30)

    # The account page: labelled merge field, a GET form to the confirmation.
    status, page = await web.get(f"/admin/accounts/{keep}")
    assert status == 200 and '<label for="merge-from">' in page
    assert 'id="no-merges"' in page and "Google" in page  # the provider by its name
    # The confirmation names both accounts and changes nothing.
    status, page = await web.get(f"/admin/merge?into={keep}&from={gone}")
    assert status == 200 and 'id="admin-merge"' in page
    source = page.split('id="merge-from"', 1)[1].split("</div>", 1)[0]
    target = page.split('id="merge-into"', 1)[1].split("</div>", 1)[0]
    assert f"@gone{tag}:localhost" in source and "Credits: 30" in source
    assert f"@keep{tag}:localhost" in target and "Google" in target
    assert (await env.bridge.storage.accounts.get(gone)).status.value == "active"
    # Wrong pairs are explained, not merged.
    for query, words in ((f"into={keep}&from={keep}", "same account twice"),
                         (f"into={keep}&from=acct_nothere", "no account acct_nothere")):
        status, page = await web.get(f"/admin/merge?{query}")
        assert status == 400 and words in page
    # The POST needs this browser's token.
    status, _ = await web.post_form("/admin/merge", {"into": keep, "from": gone,
                                                     "csrf": "forged"})
    assert status == 403 and (await env.bridge.storage.accounts.get(gone)).merged_into is None

    status, page = await web.post_form("/admin/merge", {"into": keep, "from": gone,
                                                        "csrf": csrf_of(page)})
    assert status == 200 and f"Merged {gone} into {keep}" in page
    assert (await env.bridge.accounts.view(keep)).account.credits == 30
    merge_id = re.search(r'id="unmerge-(merge_[^"]+)"', page).group(1)
    merges = page.split('id="merges"', 1)[1].split("</table>", 1)[0]
    # When, and the admin by name.
    assert f"{ADMIN_NAME} ({env.admin.mxid})" in merges and " UTC" in merges
    assert "in effect" in merges

    # Reverse: the link opens a confirmation naming both; only its POST acts.
    status, page = await web.get(f"/admin/unmerge?merge_id={merge_id}")
    assert status == 200 and f"Reverse merge {merge_id}?" in text(page)
    assert gone in page.split('id="merge-from"', 1)[1].split("</div>", 1)[0]
    assert keep in page.split('id="merge-into"', 1)[1].split("</div>", 1)[0]
    assert ADMIN_NAME in page
    assert (await env.bridge.storage.merges.get(merge_id)).reversed_at is None
    status, page = await web.post_form("/admin/unmerge", {"merge_id": merge_id,
                                                          "csrf": csrf_of(page)})
    assert status == 200 and f"Reversed merge {merge_id}" in page
    assert f"Account {gone}" in text(page) and "reversed " in page
    assert f"by {ADMIN_NAME} ({env.admin.mxid})" in page
    assert (await env.bridge.accounts.view(gone)).account.credits == 30
    # Once only.
    status, page = await web.get(f"/admin/unmerge?merge_id={merge_id}")
    assert status == 400 and "already reversed" in page

    # The account's audit trail is on its page, in words, with who did it.
    status, page = await web.get(f"/admin/accounts/{keep}")
    trail = page.split('id="audit"', 1)[1]
    assert "merge - credits: 30" in trail and "admin action: merge reversed" in trail
    assert ADMIN_NAME in trail
    records = await env.bridge.security.audit.latest(50, who=env.admin.mxid)
    assert any(r.event_type == "merge" and merge_id in r.details for r in records)
    assert any('"viewed_account"' in r.details and r.account == keep for r in records)
