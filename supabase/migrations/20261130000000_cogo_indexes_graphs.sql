-- The code indexes of the Indexing agents and the knowledge graphs of the GraphRAG agents,
-- shared by every replica. Embeddings are kept as float4 bytes, and also as a pgvector
-- `vector` where the database has the extension (Supabase does), for nearest-neighbour search
-- in the database. Row-level security is on with no policy: only the agents' own database
-- role (which owns or bypasses it) reads these tables, never Supabase's anon or authenticated
-- users.

create table if not exists public.cogo_index_files (
  index_name text not null,
  path text not null,
  language text not null,
  hash text not null,
  lines bigint not null,
  primary key (index_name, path)
);

create table if not exists public.cogo_index_symbols (
  index_name text not null,
  path text not null,
  name text not null,
  kind text not null,
  line bigint not null,
  end_line bigint not null,
  container text
);
create index if not exists cogo_index_symbols_name on public.cogo_index_symbols (index_name, name);
create index if not exists cogo_index_symbols_path on public.cogo_index_symbols (index_name, path);

create table if not exists public.cogo_index_imports (
  index_name text not null,
  path text not null,
  module text not null,
  line bigint not null
);
create index if not exists cogo_index_imports_path on public.cogo_index_imports (index_name, path);

create table if not exists public.cogo_index_calls (
  index_name text not null,
  path text not null,
  caller text,
  callee text not null,
  line bigint not null
);
create index if not exists cogo_index_calls_path on public.cogo_index_calls (index_name, path);

create table if not exists public.cogo_index_chunks (
  id bigint primary key,
  index_name text not null,
  path text not null,
  start_line bigint not null,
  end_line bigint not null,
  symbol text,
  kind text,
  text text not null,
  length bigint not null,
  embedding bytea,
  -- The model that made `embedding`: another model's embeddings are made again.
  embedding_model text
);
create index if not exists cogo_index_chunks_path on public.cogo_index_chunks (index_name, path);

-- BM25's postings: how often each word occurs in each chunk.
create table if not exists public.cogo_index_postings (
  index_name text not null,
  term text not null,
  chunk_id bigint not null,
  path text not null,
  tf bigint not null,
  primary key (index_name, term, chunk_id)
);
create index if not exists cogo_index_postings_path on public.cogo_index_postings (index_name, path);

-- Who is indexing an index now: one `index.repository` at a time per index.
create table if not exists public.cogo_index_locks (
  index_name text primary key,
  holder text not null,
  expires_at bigint not null
);

create table if not exists public.cogo_graph_nodes (
  graph text not null,
  id text not null,
  label text,
  type text,
  props text,
  primary key (graph, id)
);

create table if not exists public.cogo_graph_edges (
  graph text not null,
  source text not null,
  target text not null,
  type text not null default '',
  weight double precision not null default 1,
  primary key (graph, source, target, type)
);

-- The last communities found in each graph, with the model's summaries (GraphRAG's global
-- search reads them).
create table if not exists public.cogo_graph_communities (
  graph text not null,
  id bigint not null,
  size bigint not null,
  members text not null,
  summary text,
  primary key (graph, id)
);

-- Row-level security on, with no policy (only the role that owns the tables, or bypasses
-- security, reads them). A role that does not own them leaves them as they are.
do $$
declare
  t text;
begin
  foreach t in array array['cogo_index_files', 'cogo_index_symbols', 'cogo_index_imports',
    'cogo_index_calls', 'cogo_index_chunks', 'cogo_index_postings', 'cogo_index_locks',
    'cogo_graph_nodes', 'cogo_graph_edges', 'cogo_graph_communities']
  loop
    begin
      execute format('alter table public.%I enable row level security', t);
    exception when insufficient_privilege then
      raise notice 'row-level security on % is left as it is: this role does not own it', t;
    end;
  end loop;
end
$$;

-- pgvector, where the database offers it.
do $$
begin
  if exists (select 1 from pg_available_extensions where name = 'vector') then
    create extension if not exists vector;
    alter table public.cogo_index_chunks add column if not exists embedding_vector vector;
  end if;
exception when others then
  raise notice 'pgvector is available but cannot be used (%); embeddings are searched without it', sqlerrm;
end
$$;
