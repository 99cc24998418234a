-- The W3C `traceparent` a task row was created in (by the chat gateway, or by any client that
-- traces its requests): the operator's intake hands it to the AgentTask, so the task's attempts
-- are traced as the creator's children. A value that is no `traceparent` is ignored.
alter table public.distributed_agent_tasks
  add column if not exists trace_parent text check (trace_parent is null or length(trace_parent) <= 64);
