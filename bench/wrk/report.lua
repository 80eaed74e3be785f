-- bench/wrk/report.lua - loaded by login.lua and health.lua: wrk's done()
-- prints one machine-readable line that bench/login.sh reads:
--
--   WRK requests=N duration_us=N rps=X status_errors=N connect=N read=N
--       write=N timeout=N p50_us=N p90_us=N p99_us=N p999_us=N max_us=N
--
-- status_errors counts responses with a status above 399 (wrk's own
-- count); connect/read/write/timeout are wrk's socket errors. Latencies
-- are wrk's (microseconds, from writing a request to reading its whole
-- response), for every request completed in the run.
function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "WRK requests=%d duration_us=%d rps=%.2f status_errors=%d connect=%d read=%d write=%d timeout=%d" ..
    " p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration, secs > 0 and summary.requests / secs or 0,
    e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
