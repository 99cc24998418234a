-- The chat gateway's tables: who sent each chat message, and an audit record of every action
-- the gateway was asked for.

-- `user` for a user's message, `assistant` for the reply the gateway stored; the task that
-- answered.
alter table public.chat_messages_realtime
  add column if not exists sender text not null default 'user',
  add column if not exists task text;

create index if not exists chat_messages_realtime_session
  on public.chat_messages_realtime (session_id, timestamp);

-- One row per request the gateway authenticated or refused: who (user and address), what
-- (action, task), and how it ended (HTTP status and error code). Only the service role reads it.
create table if not exists public.cogo_gateway_audit (
  id bigserial primary key,
  at timestamp with time zone not null default now(),
  user_id uuid,
  address text,
  action text not null,
  status integer not null,
  code text,
  task text,
  detail text
);

create index if not exists cogo_gateway_audit_user on public.cogo_gateway_audit (user_id, at);

alter table public.cogo_gateway_audit enable row level security;
grant all on public.cogo_gateway_audit to service_role;
grant usage on sequence public.cogo_gateway_audit_id_seq to service_role;
