-- Results too large for a task's status. The broker writes each one here, keyed by the task's
-- row and the result's digest, before it records the task's outcome, so an accepted result
-- survives a restart or a failover of the operator. The mirror copies it into
-- distributed_agent_tasks.result_data of the row whose result_digest names it, and removes it
-- once the row is final (or names another result: a superseded attempt's). Idempotent.
create table if not exists public.cogo_task_results (
  id uuid not null,
  digest text not null,
  size_bytes bigint not null,
  result jsonb not null,
  created_at timestamp with time zone not null default now(),
  primary key (id, digest)
);

-- Only the operator (the service role, which bypasses row-level security) reads or writes it;
-- users read results through distributed_agent_tasks.
alter table public.cogo_task_results enable row level security;

-- The cluster a task's row comes from (the UID of its kube-system namespace, unless the operator
-- is given a name), so operators of several clusters can share one database: each marks only
-- its own rows deleted.
alter table public.distributed_agent_tasks add column if not exists cluster text;

-- The UID of the AgentTask a row belongs to: set by the intake when it claims a row for the
-- task it created, and by the mirror for every row it writes. The mirror updates a row only
-- for that task, so no other task can take a row over.
alter table public.distributed_agent_tasks add column if not exists task_uid uuid;

-- Realtime Authorization: task changes are broadcast on private channels (see cogo_broadcast).
-- A signed-in user may join only their own `user_tasks_<uid>` channel; the role channels
-- (`agent_tasks_<role>`, `distributed-<role>-<port>`) carry every user's tasks and are for the
-- service role alone, which needs no policy. Where Supabase's realtime.messages exists.
do $$
begin
  if to_regclass('realtime.messages') is not null then
    execute 'alter table realtime.messages enable row level security';
    if not exists (
      select 1 from pg_policies
      where schemaname = 'realtime' and tablename = 'messages' and policyname = 'cogo_own_task_channel'
    ) then
      execute $p$
        create policy cogo_own_task_channel on realtime.messages for select to authenticated
        using (
          realtime.messages.extension = 'broadcast'
          and (select realtime.topic()) = 'user_tasks_' || (select auth.uid())::text
        )
      $p$;
    end if;
  end if;
end
$$;
