-- bench/wrk/health.lua - the probe of bench/login.sh: GET /health on a few
-- connections, each waiting HEALTH_DELAY_MS (env, default 8) between a
-- response and its next request. So the probe offers at most
-- connections * 1000 / HEALTH_DELAY_MS requests/s (250/s with 2
-- connections) and costs the machine little CPU, instead of a closed loop
-- that would take a core from the hashing it is there to watch. wrk times
-- each request from its write, after the pause. HEALTH_DELAY_MS=0: no
-- pause (a closed loop: as many requests as the server answers).
--
--   HEALTH_DELAY_MS=8 wrk -t1 -c2 -d15s -s bench/wrk/health.lua http://127.0.0.1:PORT/health
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

wrk.method = "GET"
local pause = tonumber(os.getenv("HEALTH_DELAY_MS") or "8") or 8
if pause > 0 then
  function delay()
    return pause
  end
end
