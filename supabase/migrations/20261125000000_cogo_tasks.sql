-- Cogo's tables in Supabase's Postgres: the seed's three tables, extended for the operator's
-- mirror of AgentTasks. Idempotent: the operator applies it on every start (when a database
-- is configured), and `supabase db push` applies it once. On a plain Postgres it first creates
-- the few Supabase objects it refers to, and only those that are missing.

-- Supabase's roles, the auth schema, auth.users and auth.uid(), when absent.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

create schema if not exists auth;

create table if not exists auth.users (
  id uuid primary key
);

do $$
begin
  if not exists (
    select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'auth' and p.proname = 'uid'
  ) then
    -- As Supabase defines it: the subject of the request's JWT claims.
    execute $f$
      create function auth.uid() returns uuid language sql stable as $b$
        select coalesce(
          nullif(current_setting('request.jwt.claim.sub', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
      $b$
    $f$;
  end if;
end
$$;

grant usage on schema auth to anon, authenticated, service_role;

-- One row per AgentTask (keyed by the task's UID), and rows that clients insert as `pending`
-- for the operator to take in. Deleted tasks keep their rows (`deleted_at`), as history.
create table if not exists public.distributed_agent_tasks (
  id uuid primary key,
  type varchar(255) not null,
  agent_type varchar(255) not null,
  data jsonb,
  status varchar(50) default 'pending',
  result_data jsonb,
  created_at timestamp with time zone default now(),
  user_id uuid references auth.users(id)
);

alter table public.distributed_agent_tasks
  -- Where the task lives in Kubernetes; for a row not yet taken in (no name), the namespace
  -- whose intake it is for, or null for the intake's first.
  add column if not exists namespace text,
  add column if not exists name text,
  -- The CogoAgent named by the task (or that ran it), and the task's phase as Kubernetes says it.
  add column if not exists agent text,
  add column if not exists phase text,
  add column if not exists attempts integer not null default 0,
  add column if not exists started_at timestamp with time zone,
  add column if not exists finished_at timestamp with time zone,
  add column if not exists updated_at timestamp with time zone default now(),
  add column if not exists error_message text,
  add column if not exists session_id text,
  add column if not exists parent text,
  add column if not exists priority integer not null default 0,
  -- Digest and size of a result too large for the task's status (the full result is in
  -- result_data).
  add column if not exists result_digest text,
  add column if not exists result_size bigint,
  add column if not exists deleted_at timestamp with time zone,
  -- Orders the mirror's writes: a row is only ever updated to a higher version.
  add column if not exists version bigint not null default 0;

create index if not exists distributed_agent_tasks_intake
  on public.distributed_agent_tasks (created_at)
  where status = 'pending' and name is null;
create index if not exists distributed_agent_tasks_user
  on public.distributed_agent_tasks (user_id);
create index if not exists distributed_agent_tasks_k8s
  on public.distributed_agent_tasks (namespace, name);

create table if not exists public.user_roles (
  user_id uuid primary key references auth.users(id),
  role varchar(100) not null,
  permissions text[] not null,
  domain varchar(255),
  is_active boolean default true,
  created_at timestamp with time zone default now()
);

-- Unlogged, as in the seed: fast, and emptied by a crash. (Unlogged tables cannot be
-- published for logical replication, so Realtime clients get chat through Broadcast.)
create unlogged table if not exists public.chat_messages_realtime (
  id uuid primary key,
  session_id varchar(255) not null,
  user_id uuid references auth.users(id),
  content text not null,
  timestamp timestamp with time zone default now()
);

-- Row-level security: a signed-in user reads only their own rows; the service role (the
-- operator) bypasses it.
alter table public.distributed_agent_tasks enable row level security;
alter table public.user_roles enable row level security;
alter table public.chat_messages_realtime enable row level security;

do $$
declare
  t text;
begin
  foreach t in array array['distributed_agent_tasks', 'user_roles', 'chat_messages_realtime'] loop
    if not exists (
      select 1 from pg_policies
      where schemaname = 'public' and tablename = t and policyname = 'cogo_own_rows'
    ) then
      execute format(
        'create policy cogo_own_rows on public.%I for select to authenticated using (user_id = auth.uid())',
        t
      );
    end if;
    execute format('grant select on public.%I to authenticated', t);
    execute format('grant all on public.%I to service_role', t);
  end loop;
end
$$;

-- Live updates for Realtime clients, where Supabase's publication exists.
do $$
declare
  t text;
begin
  if exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    foreach t in array array['distributed_agent_tasks', 'user_roles'] loop
      if not exists (
        select 1 from pg_publication_tables
        where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = t
      ) then
        execute format('alter publication supabase_realtime add table public.%I', t);
      end if;
    end loop;
  end if;
end
$$;

-- Intake: a row inserted as `pending` with no Kubernetes object (what the chat gateway's Edge
-- Function does) wakes the operator, which also polls for such rows.
create or replace function public.cogo_intake_notify() returns trigger
language plpgsql as $$
begin
  if new.status = 'pending' and new.name is null then
    perform pg_notify('cogo_intake', new.id::text);
  end if;
  return new;
end
$$;

create or replace trigger cogo_intake
  after insert on public.distributed_agent_tasks
  for each row execute function public.cogo_intake_notify();

-- Broadcast from Database: where Supabase's realtime.send() exists, every change of a task row
-- is also broadcast, on private channels, to the channels the system's Realtime clients listen
-- on, named after the task's role (`agent_tasks_<role>` and `distributed-<role>-<port>`: the
-- agents and dashboards, with the service role), and to its owner's `user_tasks_<user_id>`.
do $$
begin
  if exists (
    select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'realtime' and p.proname = 'send'
  ) then
    execute $f$
      create or replace function public.cogo_broadcast() returns trigger
      language plpgsql security definer set search_path = '' as $b$
      declare
        port int := case new.agent_type
          when 'orchestrator' then 6001 when 'indexing' then 6002 when 'research' then 6003
          when 'graphrag' then 6004 when 'executor' then 6005 end;
        payload jsonb := jsonb_build_object(
          'id', new.id, 'type', new.type, 'agent_type', new.agent_type, 'status', new.status,
          'phase', new.phase, 'namespace', new.namespace, 'name', new.name,
          'attempts', new.attempts, 'error_message', new.error_message, 'user_id', new.user_id);
      begin
        -- Private channels: Realtime lets a client join only where a policy on
        -- realtime.messages allows it (see the 20261129 migration).
        perform realtime.send(payload, 'task_' || tg_op, 'agent_tasks_' || new.agent_type, true);
        if port is not null then
          perform realtime.send(payload, 'task_' || tg_op, 'distributed-' || new.agent_type || '-' || port, true);
        end if;
        if new.user_id is not null then
          perform realtime.send(payload, 'task_' || tg_op, 'user_tasks_' || new.user_id, true);
        end if;
        return new;
      end
      $b$
    $f$;
    execute 'create or replace trigger cogo_broadcast after insert or update on public.distributed_agent_tasks for each row execute function public.cogo_broadcast()';
  end if;
end
$$;
