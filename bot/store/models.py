"""The database schema as SQLAlchemy 2 models. Columns ending in ``_encrypted`` hold KeyRing ciphertexts.

The migrations in ``migrations/versions`` must produce exactly this schema (a test compares them).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as naive UTC text
    (which also keeps string comparison in SQL correct) and read back as aware UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AccountState(enum.StrEnum):
    ACTIVE = "active"  # relaying
    BROKEN = "broken"  # the instance rejected the token; the user must reconnect
    PAUSED = "paused"  # the user paused relaying


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class FediverseApp(Base):
    """An OAuth app registered on an instance, one per (instance, scope set)."""

    __tablename__ = "fediverse_apps"
    __table_args__ = (UniqueConstraint("instance", "scopes"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance: Mapped[str] = mapped_column(String(255))  # normalized base URL, e.g. https://example.org
    scopes: Mapped[str] = mapped_column(String(255))  # sorted, unique, space-joined
    client_id: Mapped[str] = mapped_column(String(255))
    client_secret_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Account(Base):
    """A fediverse account connected by a Matrix user; one user may connect several."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("matrix_user_id", "instance", "fediverse_account_id"),
        CheckConstraint(
            "state IN ({})".format(", ".join(f"'{s.value}'" for s in AccountState)), name="state"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    matrix_user_id: Mapped[str] = mapped_column(String(255))
    instance: Mapped[str] = mapped_column(String(255))
    # RESTRICT: revoking a token needs the app's client credentials, so an app cannot vanish under the
    # accounts whose tokens it issued; the caller deletes those accounts first, on purpose.
    app_id: Mapped[int] = mapped_column(ForeignKey("fediverse_apps.id", ondelete="RESTRICT"), index=True)
    fediverse_account_id: Mapped[str] = mapped_column(String(255))
    acct: Mapped[str] = mapped_column(String(512))  # user@domain
    token_encrypted: Mapped[str] = mapped_column(Text)
    # KeyRing.fingerprint of the token: Mastodon and Akkoma hand the same token to every connection of one
    # account through one app, so a revoke must know whether another row still uses it. NULL for rows
    # stored before this column; filled in when first compared.
    token_fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    scopes: Mapped[str] = mapped_column(String(255))  # granted, normalized like FediverseApp.scopes
    software: Mapped[str | None] = mapped_column(String(64))  # the server's, as probed at connect
    cursor: Mapped[str | None] = mapped_column(String(255))  # id of the last relayed notification
    state: Mapped[str] = mapped_column(String(16))
    notify_types: Mapped[str | None] = mapped_column(Text)  # space-separated; NULL means all types
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class PendingFlow(Base):
    """A connect conversation waiting for the user to paste the authorization code. Single use."""

    __tablename__ = "pending_flows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    matrix_user_id: Mapped[str] = mapped_column(String(255), index=True)
    instance: Mapped[str] = mapped_column(String(255))
    # CASCADE: a flow is worthless once its app registration is gone (e.g. the instance forgot it).
    app_id: Mapped[int] = mapped_column(ForeignKey("fediverse_apps.id", ondelete="CASCADE"), index=True)
    scopes: Mapped[str] = mapped_column(String(255))
    software: Mapped[str | None] = mapped_column(String(64))  # the server's software, as probed at start
    # `allow-actions`: the stored account this flow upgrades; the code must sign in as that account.
    # CASCADE: an upgrade of an account that was revoked meanwhile has nothing left to upgrade.
    upgrades_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    oauth_state: Mapped[str] = mapped_column(String(128), unique=True)
    pkce_verifier_encrypted: Mapped[str] = mapped_column(Text)  # random per flow; see oauth.new_pkce_verifier
    dm_room_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class DmRoom(Base):
    """The direct-message room the bot uses with each Matrix user."""

    __tablename__ = "dm_rooms"

    matrix_user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class MatrixSession(Base):
    """The bot's own Matrix login; a single row (id = 1)."""

    __tablename__ = "matrix_session"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    user_id: Mapped[str] = mapped_column(String(255))
    device_id: Mapped[str] = mapped_column(String(255))
    access_token_encrypted: Mapped[str] = mapped_column(Text)
    sync_token: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class HandledEvent(Base):
    """A Matrix command event already acted on, so a restart does not act on it twice. Pruned by age."""

    __tablename__ = "handled_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(255))
    handled_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class OutboxMessage(Base):
    """A relay message written before it is sent, so a crash between send and commit re-sends it with the
    same Matrix transaction id (the homeserver then drops the duplicate) instead of losing or doubling it.

    ``cursors`` holds the account cursor updates committed with the send ("<account id>:<notification id>"
    pairs, space-separated); the row is deleted in the same transaction. No secrets are stored here.
    """

    __tablename__ = "relay_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    matrix_user_id: Mapped[str] = mapped_column(String(255), index=True)
    room_id: Mapped[str] = mapped_column(String(255))
    txn_id: Mapped[str] = mapped_column(String(128), unique=True)
    # The message's plain and HTML bodies, as JSON, encrypted with the key ring (`outbox_message_aad`):
    # notification texts, direct messages among them, are never stored in plaintext. `body`/`html` are
    # only set in rows written before that (NULL in new rows; read when `message_encrypted` is NULL).
    message_encrypted: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    cursors: Mapped[str] = mapped_column(Text)
    # What the message shows, for the event map (`RelayedEvent`) written when it is sent: JSON, or NULL
    # for a grouped message (nothing single to act on).
    shows: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RelayWorker(Base):
    """A `run --role relay` process, alive while `expires_at` is in the future (renewed by its heartbeat).
    The live count sets each worker's fair share of the accounts."""

    __tablename__ = "relay_workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class RelayLease(Base):
    """Which relay worker streams an account, until when. A lease whose `expires_at` has passed (or whose
    holder is NULL) is free to claim. Only written by `run --role relay` workers (PostgreSQL)."""

    __tablename__ = "relay_leases"

    # CASCADE: a deleted (revoked) account loses its lease, and its worker sees that on the next renewal.
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    holder: Mapped[str | None] = mapped_column(String(64), index=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RelayedEvent(Base):
    """The event map: a relay message the bot sent into a user's DM → the notification it shows, so a
    reaction or reply to that message can act on it. One row per single-notification message, written in
    the transaction that finishes its outbox row. Deleted with the account (revoke) or user (forget-me).

    No foreign key to ``accounts``: a message still in flight when its account is revoked must not make
    the delivery commit fail; the commit skips accounts that are gone instead.
    """

    __tablename__ = "relayed_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    matrix_user_id: Mapped[str] = mapped_column(String(255), index=True)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    room_id: Mapped[str] = mapped_column(String(255))
    notification_id: Mapped[str] = mapped_column(String(255))
    notification_type: Mapped[str] = mapped_column(String(64))
    status_id: Mapped[str | None] = mapped_column(String(255))
    requester_account_id: Mapped[str | None] = mapped_column(String(255))  # follow requests only
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class ActionJournalEntry(Base):
    """A fediverse action asked for from Matrix, keyed by the Matrix event that asked (a reaction, a
    redaction, a reply, a `post` command). Written ``pending`` before the server call, ``done`` after, so a
    replayed event never acts twice: a done entry is not repeated, a pending one is retried with the same
    idempotency key. A reaction, reply or post is written at intake (before the sync token moves past its
    event), with ``started_at`` unset until the first server call; a reply's or post's text is kept
    encrypted until done."""

    __tablename__ = "action_journal"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'done')", name="state"),
    )

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    matrix_user_id: Mapped[str] = mapped_column(String(255), index=True)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    action: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(255))  # status or account the action is on
    idempotency_key: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    result_id: Mapped[str | None] = mapped_column(String(255))  # the new status of a post or reply
    result_url: Mapped[str | None] = mapped_column(Text)
    text_encrypted: Mapped[str | None] = mapped_column(Text)  # a reply's or post's text, until done
    visibility: Mapped[str | None] = mapped_column(String(16))  # a post's asked-for visibility
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())  # None: no server call made yet
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
