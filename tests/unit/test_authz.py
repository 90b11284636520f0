from __future__ import annotations

import pytest

from tailer import cli
from tailer.api.authz import AuthzConfigError, Identity, StaticTokens, TokensUnusable, parse_token_file


def test_token_file_formats(tmp_path) -> None:
    csv = parse_token_file("# comment\nt1,alice,shop,staging\nt2,root,*\n", "x.csv")
    yml = parse_token_file("tokens:\n- {token: t1, user: alice, namespaces: [shop, staging]}\n"
                           "- {token: t2, user: root, namespaces: '*'}\n", "x.yaml")
    assert csv == yml and {ns for _, ns in csv.values()} == {frozenset({"*"}), frozenset({"shop", "staging"})}
    for bad, name in (("t1,alice\n", "x.csv"), ("- {user: a}\n", "x.yaml"), ("- {token: t, user: a}\n", "x.yaml"),
                      ("{{", "x.yaml")):
        with pytest.raises(AuthzConfigError):
            parse_token_file(bad, name)


async def test_static_tokens_scope_and_reload(tmp_path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text("t1,alice,shop\n")
    tokens = StaticTokens(str(path))
    alice = await tokens.authenticate("t1")
    assert alice == Identity("alice") and await tokens.authenticate("t2") is None
    assert await tokens.allowed(alice, "shop") and not await tokens.allowed(alice, "other")
    assert not await tokens.allowed(alice, "")  # cluster scope needs "*"
    path.write_text("t1,alice,*\nt2,bob,dev\n")
    assert await tokens.authenticate("t2") == Identity("bob") and await tokens.allowed(alice, "")


def test_store_flags(tmp_path) -> None:
    s = cli.parse(["--data-dir", str(tmp_path), "--retention-age", "7d", "--retention-bytes", "10Gi"])
    assert s.store.target == str(tmp_path / "audit.db") and s.store.retention_age == 7 * 86400
    assert s.store.retention_bytes == 10 * 1024**3 and s.api.auth == "disabled"
    assert cli.parse(["--store", "none"]).store.target is None
    assert cli.parse(["--store", "postgresql://u@h/db", "--api-auth", "none"]).api.auth == "none"
    (tmp_path / "t.csv").write_text("t,u,*\n")
    assert cli.parse(["--token-file", str(tmp_path / "t.csv")]).api.auth == "token-file"


@pytest.mark.parametrize("args", [["--store", "mysql://x"], ["--api-auth", "token-file"],
                                  ["--token-file", "/nonexistent"], ["--retention-age", "soon"]])
def test_bad_store_flags_exit_2(args, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse(args)
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("audit-tailer: error: ")


async def test_a_user_listed_twice_never_widens_a_token(tmp_path) -> None:
    """Regression: namespaces were looked up by user name, so a second entry for the same user with '*'
    gave the first, namespace-scoped token cluster-wide access. Such a file is now refused."""
    with pytest.raises(AuthzConfigError, match="different namespaces"):
        parse_token_file("ci-dev,ci,dev\nci-admin,ci,*\n", "x.csv")
    with pytest.raises(AuthzConfigError, match="listed twice"):
        parse_token_file("t,alice,shop\nt,mallory,*\n", "x.csv")
    rotated = parse_token_file("old,ci,dev\nnew,ci,dev\n", "x.csv")  # token rotation: one user, one scope
    assert len(rotated) == 2
    path = tmp_path / "tokens.csv"
    path.write_text("ci-dev,ci,dev\n")
    tokens = StaticTokens(str(path))
    ci = await tokens.authenticate("ci-dev")
    assert ci is not None and not await tokens.allowed(ci, "")
    path.write_text("ci-dev,ci,dev\nci-admin,ci,*\n")  # a bad edit: refused as a whole, nothing widened
    with pytest.raises(TokensUnusable):
        await tokens.authenticate("ci-admin")
    assert not await tokens.allowed(ci, "") and not await tokens.allowed(ci, "dev")


async def test_a_bad_or_missing_token_file_fails_closed_until_it_is_valid_again(tmp_path) -> None:
    """Regression: a malformed edit was ignored (the old tokens stayed valid) and a deleted file kept every
    token valid, silently. Now: logged once, counted, every request refused until the file is good."""
    path = tmp_path / "tokens.csv"
    path.write_text("t1,alice,shop\n")
    errors: list[str] = []
    tokens = StaticTokens(str(path), on_error=errors.append)
    assert await tokens.authenticate("t1") == Identity("alice")
    path.write_text("t1,alice\n")  # malformed
    for _ in range(3):
        with pytest.raises(TokensUnusable, match="expected token,user,namespace"):
            await tokens.authenticate("t1")
    assert errors == ["malformed"]  # once, not per request
    path.unlink()  # deleted: a revoked file must not keep its tokens
    with pytest.raises(TokensUnusable, match="cannot read token file"):
        await tokens.authenticate("t1")
    assert not await tokens.allowed(Identity("alice"), "shop")
    assert errors == ["malformed", "missing"]
    path.write_text("t2,bob,dev\n")  # valid again
    assert await tokens.authenticate("t1") is None and await tokens.authenticate("t2") == Identity("bob")
    with pytest.raises(AuthzConfigError):
        StaticTokens(str(tmp_path / "absent.csv"))  # at start-up: a configuration error
