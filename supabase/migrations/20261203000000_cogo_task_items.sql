-- The results of an indexed task's items (AgentTask spec.items): one row per item that
-- succeeded, keyed by the task's row in distributed_agent_tasks and the item's index. The
-- broker writes them in batches before it records the items' outcomes, so an acknowledged
-- item result survives a restart of the operator; the task's own row keeps the counts. A
-- retried item's row is replaced by its newer attempt's.
create table if not exists public.cogo_task_item_results (
  id uuid not null,
  item integer not null check (item >= 0),
  attempt integer not null,
  result jsonb not null,
  recorded_at timestamp with time zone not null default now(),
  primary key (id, item)
);

-- A user reads the item results of their own tasks; the operator writes as the service role.
alter table public.cogo_task_item_results enable row level security;
grant select on public.cogo_task_item_results to authenticated;
grant all on public.cogo_task_item_results to service_role;
do $$
begin
  if not exists (
    select 1 from pg_policies
    where schemaname = 'public' and tablename = 'cogo_task_item_results' and policyname = 'cogo_own_item_results'
  ) then
    create policy cogo_own_item_results on public.cogo_task_item_results for select to authenticated
      using (exists (
        select 1 from public.distributed_agent_tasks d
        where d.id = cogo_task_item_results.id and d.user_id = (select auth.uid())
      ));
  end if;
end
$$;
