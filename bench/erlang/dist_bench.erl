%% dist_bench.erl - Erlang distribution's peer of bench/nats_bench.c
%% (issue 10): two Erlang nodes on loopback (TCP, connected through epmd),
%% the same workloads and sizes as nats_bench:
%%
%%   erl -name srv@127.0.0.1 -setcookie C -noshell -eval 'dist_bench:serve()'
%%   erl -name cli@127.0.0.1 -setcookie C -noshell \
%%       -eval "dist_bench:client('srv@127.0.0.1', all, 0)"
%%
%% The server registers `echo`, a process that answers {From, Ref, Bin}
%% with {Ref, Bin}, counts {post, Bin}, and answers {From, Ref, count} with
%% the count since the last one. rtt: a 64-byte binary, N (3,000) round
%% trips after 500 of warm-up: median and p99. oneway: N (500,000) posts
%% (after a tenth of that), then the count as the end marker (one sender,
%% one receiver: Erlang keeps their order): posts received and sent per
%% second. mib: a 1 MiB binary, 50 after 5 of warm-up: median.
%% RESULT nats.erlang.<rtt|rtt_p99|oneway|oneway_sent|oneway_lost|mib>.
-module(dist_bench).
-export([serve/0, client/3]).

serve() ->
  register(echo, spawn(fun() -> loop(0) end)),
  io:format("ready~n"),
  receive stop -> ok end.

loop(N) ->
  receive
    {post, _} -> loop(N + 1);
    {From, Ref, count} -> From ! {Ref, N}, loop(0);
    {From, Ref, Bin} -> From ! {Ref, Bin}, loop(N)
  end.

client(Srv, Wl, N) ->
  Echo = {echo, Srv},
  true = net_kernel:connect_node(Srv),
  wait_registered(Srv, 100),
  Small = binary:copy(<<"x">>, 64),
  [rtt(Echo, Small, 500, pick(N, 3000)) || Wl =:= rtt orelse Wl =:= all],
  [oneway(Echo, Small, pick(N, 500000)) || Wl =:= oneway orelse Wl =:= all],
  [mib(Echo, pick(N, 50)) || Wl =:= mib orelse Wl =:= all],
  halt(0).

pick(0, D) -> D;
pick(N, _) -> N.

wait_registered(_, 0) -> erlang:error(no_echo);
wait_registered(Srv, K) ->
  case rpc:call(Srv, erlang, whereis, [echo]) of
    P when is_pid(P) -> ok;
    _ -> timer:sleep(50), wait_registered(Srv, K - 1)
  end.

call(Echo, Msg) ->
  Ref = make_ref(),
  Echo ! {self(), Ref, Msg},
  receive {Ref, R} -> R after 10000 -> erlang:error(timeout) end.

now_us() -> erlang:monotonic_time(microsecond).

timed(Echo, Bin, Warm, N) ->
  [call(Echo, Bin) || _ <- lists:seq(1, Warm)],
  T = [begin T0 = now_us(), Bin2 = call(Echo, Bin),
             byte_size(Bin2) =:= byte_size(Bin) orelse erlang:error(short),
             now_us() - T0 end || _ <- lists:seq(1, N)],
  list_to_tuple(lists:sort(T)).

rtt(Echo, Bin, Warm, N) ->
  T = timed(Echo, Bin, Warm, N),
  result(rtt, element(N div 2 + 1, T), "us"),
  result(rtt_p99, element(N * 99 div 100 + 1, T), "us").

oneway(Echo, Bin, N) ->
  post(Echo, Bin, N div 10),
  call(Echo, count),
  T0 = now_us(),
  post(Echo, Bin, N),
  Got = call(Echo, count),
  Secs = (now_us() - T0) / 1.0e6,
  result(oneway, Got / Secs, "msgs/s"),
  result(oneway_sent, N / Secs, "msgs/s"),
  result(oneway_lost, N - Got, "msgs").

post(_, _, 0) -> ok;
post(Echo, Bin, K) -> Echo ! {post, Bin}, post(Echo, Bin, K - 1).

mib(Echo, N) ->
  T = timed(Echo, binary:copy(<<"x">>, 1 bsl 20), 5, N),
  result(mib, element(N div 2 + 1, T), "us").

result(Metric, V, Unit) ->
  io:format("RESULT nats.erlang.~s ~s ~s~n",
            [Metric, float_to_list(float(V), [{decimals, 4}, compact]), Unit]).
