-- The schema examples/bank expects at every participant it uses. txpart runs it at start-up:
--   txpart --name accounts-even --db even.db --listen 127.0.0.1:7101 --init-sql schema.sql ...
CREATE TABLE IF NOT EXISTS accounts(
  id INTEGER PRIMARY KEY,
  balance INTEGER NOT NULL
);
