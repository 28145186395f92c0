"""The Redis guardrail scripts: :mod:`remediator.core.guardrails` in Lua.

Each script runs atomically inside Redis, so replicas cannot interleave a check and
its bookkeeping.  They follow the pure rules line for line (same order, same
comparisons, same findings); the contract suite runs both on the same scenarios.
EVALUATE is ADMIT's checks alone, built from the same text, for plan-only executions
that must see the guardrails without consuming them.

Conventions: time is the caller's ``now`` (ARGV), never Redis ``TIME``, so virtual
clocks work; numbers go in and out as ``%.17g`` strings so no double loses a bit (a
Lua number returned to Redis would be truncated to an integer); each key's own
expiry (``PEXPIRE``) is only garbage collection, ``grace`` seconds after its value
stops mattering, because the value itself decides.
"""

from __future__ import annotations

from remediator.core.guardrails import LOCK_RECORD_KEPT, OUTCOME_RECORD_KEPT

PRELUDE = f"""
local kept = {LOCK_RECORD_KEPT!r}  -- seconds a lock's record (its last owner) outlives its expiry
local function num(x) return string.format('%.17g', x) end
local function ms(seconds) return math.max(1, math.ceil(seconds * 1000)) end
local function extend(key, millis)  -- a key shared by many entries only ever lives longer
  if redis.call('PTTL', key) < millis then redis.call('PEXPIRE', key, millis) end
end
"""

#: The error a script answers when the state's marker key is missing: the state was lost (a Redis
#: restarted without persistence, flushed, or failed over to a replica that never had it).  Every
#: script that admits, takes, keeps or frees a lock checks it (ADMIT after the pause, a refusal
#: that is right whole or not), so
#: nothing is admitted or taken on a state that forgot the running executions, until the state is
#: rebuilt from the store and the marker set again (see :mod:`remediator.guardstate.rebuild`).
STATE_LOST = "REMEDIATOR_STATE_LOST"
#: RENEW's answer when the lock it is asked to extend has no record at all: this execution held it
#: (it is renewing), and a record outlives its lock by LOCK_RECORD_KEPT, so the state lost it.
NO_LOCK_RECORD = "REMEDIATOR_NO_LOCK_RECORD"


def _intact(key: str) -> str:
    """Lua: answer STATE_LOST unless the marker (``key``, a KEYS entry) exists."""
    return f"if redis.call('EXISTS', {key}) == 0 then return redis.error_reply('{STATE_LOST}') end\n"

# The concurrency limits, the last of ADMIT's checks and all of TAKE_BACK's: the live slots of
# other owners ({running}: zset owner -> expiry; {running_ns}: hash owner -> namespace).
_CONCURRENCY = """
if max_running > 0 or max_ns > 0 then
  local total, in_ns = 0, 0
  for _, other in ipairs(redis.call('ZRANGEBYSCORE', {running}, '(' .. num(now), '+inf')) do
    if other ~= owner then
      total = total + 1
      if redis.call('HGET', {running_ns}, other) == namespace then in_ns = in_ns + 1 end
    end
  end
  if max_running > 0 and total >= max_running then return {'running', '0', tostring(total)} end
  if max_ns > 0 and in_ns >= max_ns then return {'running_ns', '0', tostring(in_ns)} end
end
"""

# ADMIT and EVALUATE share their keys, their arguments and, word for word, their checks
# (_CHECKS): EVALUATE is ADMIT without the bookkeeping (_RECORD), so the two cannot drift.
# KEYS: 1 paused, 2 breaker, 3 lock, 4 cooldown, 5 rate, 6 running (zset owner -> expiry),
#       7 running namespaces (hash owner -> namespace), 8 sequence, 9 the state's marker,
#       10.. one per applicable budget
# ARGV: 1 owner, 2 namespace, 3 now, 4 rate_max, 5 rate_per, 6 cooldown, 7 lock_ttl, 8 breaker threshold,
#       9 max_running, 10 max_running_per_namespace, 11 grace, 12 longest budget window,
#       then per budget key: its position in the policy, max, per
# Only reads: the first refusal returns its finding, {code, at, count, holder, budget} (trailing ones may be
# left out, as redis._finding reads it); falling through means every check passed.
_CHECKS = """
local owner, namespace = ARGV[1], ARGV[2]
local now = tonumber(ARGV[3])
local rate_max, rate_per = tonumber(ARGV[4]), tonumber(ARGV[5])
local cooldown, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local threshold = tonumber(ARGV[8])
local max_running, max_ns = tonumber(ARGV[9]), tonumber(ARGV[10])
local grace, longest = tonumber(ARGV[11]), tonumber(ARGV[12])
local nbudgets = #KEYS - 9

-- a pause is always a safe answer, the state whole or not (the kill switch re-arms it from the store)
if redis.call('EXISTS', KEYS[1]) == 1 then return {'paused'} end
{intact}

local br = redis.call('HMGET', KEYS[2], 'failures', 'open_until', 'trial_owner')
local failures = tonumber(br[1] or '0')
local tripped = threshold > 0 and failures >= threshold
if tripped then
  local open_until = tonumber(br[2] or '0')
  if now < open_until then return {'open', num(open_until), tostring(failures)} end
  local trial = br[3] or ''
  if trial ~= '' and trial ~= owner then
    local slot = redis.call('ZSCORE', KEYS[6], trial)
    if slot and tonumber(slot) > now then return {'half_open'} end
  end
end

local lock = redis.call('HMGET', KEYS[3], 'owner', 'expires')
if lock[1] and tonumber(lock[2]) > now then return {'locked', '0', '0', lock[1]} end

local cooldown_until = tonumber(redis.call('GET', KEYS[4]) or '0')
if now < cooldown_until then return {'cooldown', num(cooldown_until)} end

-- n executions in the window (after, +inf] of a history, at least limit: when the (n - limit + 1)-th
-- oldest leaves it, so that one more fits (the pure rules' _room_at)
local function room_at(key, after, n, limit, per)
  local entry = redis.call('ZRANGEBYSCORE', key, after, '+inf', 'WITHSCORES', 'LIMIT', n - limit, 1)
  return num(tonumber(entry[2]) + per)
end

if rate_max > 0 then
  local after = '(' .. num(now - rate_per)
  local n = redis.call('ZCOUNT', KEYS[5], after, '+inf')
  if n >= rate_max then return {'rate', room_at(KEYS[5], after, n, rate_max, rate_per), tostring(n)} end
end

for i = 1, nbudgets do
  local base = 12 + (i - 1) * 3
  local max, per = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local after = '(' .. num(now - per)
  local n = redis.call('ZCOUNT', KEYS[9 + i], after, '+inf')
  if n >= max then return {'budget', room_at(KEYS[9 + i], after, n, max, per), tostring(n), '', ARGV[base + 1]} end
end

""" + _CONCURRENCY.replace("{running}", "KEYS[6]").replace("{running_ns}", "KEYS[7]")

# Admitted: record the execution's start (lock, cooldown, rate and budget history, slot, breaker trial).
_RECORD = """
redis.call('HSET', KEYS[3], 'owner', owner, 'expires', num(now + ttl))
redis.call('PEXPIRE', KEYS[3], ms(ttl + kept))
if cooldown > 0 then
  redis.call('SET', KEYS[4], num(now + cooldown), 'PX', ms(cooldown + grace))
end
if rate_max > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', num(now - 2 * rate_per))  -- twice the window: late requests
  redis.call('ZADD', KEYS[5], num(now), redis.call('INCR', KEYS[8]))
  extend(KEYS[5], ms(2 * rate_per + grace))
end
local seen = {}
for i = 1, nbudgets do
  local key = KEYS[9 + i]
  if not seen[key] then  -- a scope with several budgets keeps one history
    seen[key] = true
    redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now - 2 * longest))
    redis.call('ZADD', key, num(now), redis.call('INCR', KEYS[8]))
    extend(key, ms(2 * longest + grace))
  end
end
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', num(now))) do
  redis.call('ZREM', KEYS[6], dead)
  redis.call('HDEL', KEYS[7], dead)
end
redis.call('ZADD', KEYS[6], num(now + ttl), owner)
redis.call('HSET', KEYS[7], owner, namespace)
extend(KEYS[6], ms(ttl + grace))
extend(KEYS[7], ms(ttl + grace))
if tripped then redis.call('HSET', KEYS[2], 'trial_owner', owner) end
"""

_PASSED = """
return {'passed'}
"""

ADMIT = PRELUDE + _CHECKS.replace("{intact}", _intact("KEYS[9]")) + _RECORD + _PASSED

# The verdict ADMIT would give, with no write at all: a half-open breaker with no live trial
# passes without making this owner its trial.  It reads the state as it is, whole or lost (the
# marker unchecked): a plan-only verdict acts on nothing, and the admissions find a loss.
EVALUATE = PRELUDE + _CHECKS.replace("{intact}", "") + _PASSED

# RENEW and REACQUIRE differ only in when they may (re)take the lock; both then hold it for
# lock_ttl more and keep the execution's concurrency slot.
_HOLD_LOCK = PRELUDE + _intact("KEYS[4]") + """
local owner, namespace = ARGV[1], ARGV[2]
local now, ttl, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local lock = redis.call('HMGET', KEYS[1], 'owner', 'expires')
{when}
redis.call('HSET', KEYS[1], 'owner', owner, 'expires', num(now + ttl))
redis.call('PEXPIRE', KEYS[1], ms(ttl + kept))
redis.call('ZADD', KEYS[2], num(now + ttl), owner)
redis.call('HSET', KEYS[3], owner, namespace)
extend(KEYS[2], ms(ttl + grace))
extend(KEYS[3], ms(ttl + grace))
return 1
"""

# KEYS: 1 lock, 2 running, 3 running namespaces, 4 the state's marker.
# ARGV: 1 owner, 2 namespace, 3 now, 4 lock_ttl, 5 grace
#   RENEW: only its own live lock; no record at all is the state's loss (NO_LOCK_RECORD), not a lock to
#   take back: the caller holds it, and its record would outlive it.  REACQUIRE: only a lock whose last
#   holder (live, lapsed or released: the record is kept) was this owner, or of which there is no record.
RENEW = _HOLD_LOCK.replace("{when}", f"if not lock[1] then return redis.error_reply('{NO_LOCK_RECORD}') end\n"
                           "if lock[1] ~= owner or tonumber(lock[2]) <= now then return 0 end")
REACQUIRE = _HOLD_LOCK.replace("{when}", "if lock[1] and lock[1] ~= owner then return 0 end")

# KEYS: as REACQUIRE.  ARGV: as REACQUIRE, then 6 max_running, 7 max_running_per_namespace
#   REACQUIRE's lock rule, then the concurrency limits (its slot was given up: see rules.take_back).
#   Returns a finding as ADMIT does ({'locked', at, count, holder} when another owner held it);
#   1 when both were taken.
TAKE_BACK = _HOLD_LOCK.replace("{when}", """
if lock[1] and lock[1] ~= owner then return {'locked', '0', '0', lock[1]} end
local max_running, max_ns = tonumber(ARGV[6]), tonumber(ARGV[7])
""" + _CONCURRENCY.replace("{running}", "KEYS[2]").replace("{running_ns}", "KEYS[3]"))

# KEYS: 1 breaker, 2 running, 3 the state's marker.  ARGV: 1 owner, 2 now, 3 breaker threshold
#   rules.go_on_as_trial: 1 when the stopped execution may go on (closed; half-open and it is, or now
#   becomes, the trial), 0 when not (open; another execution's live trial).
TRIAL = _intact("KEYS[3]") + """
local owner, now, threshold = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local br = redis.call('HMGET', KEYS[1], 'failures', 'open_until', 'trial_owner')
if not (threshold > 0 and tonumber(br[1] or '0') >= threshold) then return 1 end
if now < tonumber(br[2] or '0') then return 0 end
local trial = br[3] or ''
if trial ~= '' and trial ~= owner then
  local slot = redis.call('ZSCORE', KEYS[2], trial)
  if slot and tonumber(slot) > now then return 0 end
end
if trial ~= owner then redis.call('HSET', KEYS[1], 'trial_owner', owner) end
return 1
"""

# KEYS: 1 lock, 2 running, 3 running namespaces.  ARGV: 1 owner, 2 now (the request's: when it was admitted)
#   The lock is left lapsed at ARGV[2] with its owner on record, never deleted: ADMIT overwrote the
#   record of whoever held the target before, and without one TAKE_BACK / REACQUIRE would let an
#   execution stopped before that run its stale plan (see rules.abandon).  The key's expiry, set when
#   the lock was taken, keeps the record for `kept` after that.
ABANDON = PRELUDE + """
local lock = redis.call('HMGET', KEYS[1], 'owner', 'expires')
if lock[1] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'expires', num(math.min(tonumber(lock[2]), tonumber(ARGV[2]))))
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""

# KEYS: 1 lock, 2 running, 3 running namespaces, 4 cooldown, 5 breaker, 6 breaker index,
#       7 the execution's outcome record (set once the breaker has counted its outcome: until when it is kept),
#       8 the state's marker (lost: the release waits for the rebuild, so that its cooldown and outcome land in it)
# ARGV: 1 owner, 2 now, 3 cooldown, 4 succeeded (1, 0, or - for neither: the breaker is left alone),
#       5 breaker threshold, 6 breaker cool-off, 7 grace, 8 playbook
#   The freed lock keeps its record (owner, lapsed now) for REACQUIRE.
#   Applied twice (its reply lost, redis-py sends it again; a replica retries it after an outage), it
#   is applied once (see rules.release): the breaker is fed only without an outcome record, and
#   nothing else is written unless it changes (the lock while live, the cooldown when it ends later).
RELEASE = PRELUDE + _intact("KEYS[8]") + f"""
local outcome_kept = {OUTCOME_RECORD_KEPT!r}  -- seconds an execution's counted outcome is remembered
""" + """
local owner, now, cooldown = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local threshold, cooloff, grace = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local lock = redis.call('HMGET', KEYS[1], 'owner', 'expires')
if lock[1] == owner and tonumber(lock[2]) > now then
  redis.call('HSET', KEYS[1], 'expires', num(now))
  redis.call('PEXPIRE', KEYS[1], ms(kept))
end
redis.call('ZREM', KEYS[2], owner)
redis.call('HDEL', KEYS[3], owner)
if cooldown > 0 then
  local cooldown_until = tonumber(redis.call('GET', KEYS[4]) or '0')
  if now + cooldown > cooldown_until then
    redis.call('SET', KEYS[4], num(now + cooldown), 'PX', ms(cooldown + grace))
  end
end
if ARGV[4] == '-' or tonumber(redis.call('GET', KEYS[7]) or '0') > now then
  return 1
end
redis.call('SET', KEYS[7], num(now + outcome_kept), 'PX', ms(outcome_kept + grace))
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[5])
  redis.call('SREM', KEYS[6], ARGV[8])
elseif threshold > 0 then
  local br = redis.call('HMGET', KEYS[5], 'failures', 'open_until')
  local failures = tonumber(br[1] or '0') + 1
  local open_until = tonumber(br[2] or '0')
  if failures >= threshold then open_until = now + cooloff end
  redis.call('HSET', KEYS[5], 'failures', tostring(failures), 'open_until', num(open_until), 'trial_owner', '')
  redis.call('SADD', KEYS[6], ARGV[8])
end
return 1
"""

# Re-seeding a lost state from the store (see remediator.guardstate.rebuild): each writes only what is
# missing, so a rebuild sent twice, by two replicas, or over a state that kept some of it, changes nothing
# that is there.  None checks the marker: the rebuild sets it once all of them have landed.

# KEYS: 1 lock, 2 running, 3 running namespaces.
# ARGV: 1 owner, 2 namespace, 3 expires, 4 now, 5 grace, 6 '1' when the owner is unfinished (it holds the
#   lock and its slot until expires), '0' for a finished one (its record only: the target's last holder)
SEED_LOCK = PRELUDE + """
local owner, namespace = ARGV[1], ARGV[2]
local expires, now, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if expires + kept <= now then return 0 end  -- a record kept no longer: the lost one would be gone too
local holder = redis.call('HGET', KEYS[1], 'owner')
if not holder then
  redis.call('HSET', KEYS[1], 'owner', owner, 'expires', num(expires))
  redis.call('PEXPIRE', KEYS[1], ms(expires - now + kept))  -- as long as the lost one was kept
  holder = owner
end
if ARGV[6] == '1' and holder == owner and expires > now and not redis.call('ZSCORE', KEYS[2], owner) then
  redis.call('ZADD', KEYS[2], num(expires), owner)
  redis.call('HSET', KEYS[3], owner, namespace)
  extend(KEYS[2], ms(expires - now + grace))
  extend(KEYS[3], ms(expires - now + grace))
end
return 1
"""

# KEYS: 1 cooldown.  ARGV: 1 until, 2 now, 3 grace.  Only ever later.
SEED_COOLDOWN = PRELUDE + """
local ends, now, grace = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if ends > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], num(ends), 'PX', ms(ends - now + grace))
end
return 1
"""

# KEYS: 1 a rate or budget history.  ARGV: 1 how long the key is kept (seconds), then member, time pairs
#   (the members are execution ids: the same execution is one entry however often it is seeded).
#   Only into a history that is missing: one that exists was written by admissions, which count alike.
SEED_HISTORY = PRELUDE + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ms(tonumber(ARGV[1])))
return 1
"""
