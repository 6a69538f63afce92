-- Pool jobs: read the job records (for job_keys, jobs and job_payload).
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: '' for every record, or one job key
-- returns: {key, record JSON, key, record JSON, ...} or, for one key, {record JSON or false,
--          payload or false}
-- Atomicity: a consistent snapshot of the records (and of the payload with its record).
if ARGV[1] == '' then
  return redis.call('HGETALL', K.jobs)
end
return {redis.call('HGET', K.jobs, ARGV[1]), redis.call('HGET', K.payloads, ARGV[1])}
