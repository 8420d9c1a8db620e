#!/usr/bin/env escript
%%! -hidden -sname bxsampler
%% sampler.escript NODE COOKIE BEAMPID OUTFILE INTERVAL_MS STOPFILE
main([Node0, Cookie, BeamPid, Out, Ms, Stop]) ->
    Node = list_to_atom(Node0),
    erlang:set_cookie(node(), list_to_atom(Cookie)),
    true = net_kernel:connect_node(Node),
    {ok, Bin} = file:read_file(filename:join(filename:dirname(escript:script_name()), "bxs.beam")),
    {module, bxs} = rpc:call(Node, code, load_binary, [bxs, "bxs.beam", Bin]),
    {ok, F} = file:open(Out, [write]),
    loop(Node, BeamPid, F, list_to_integer(Ms), Stop).

loop(Node, BeamPid, F, Ms, Stop) ->
    {T, Total, Classes} = rpc:call(Node, bxs, snap, []),
    {ok, Stat} = file:read_file("/proc/" ++ BeamPid ++ "/stat"),
    {ok, Io} = file:read_file("/proc/" ++ BeamPid ++ "/io"),
    [_, After] = string:split(binary_to_list(Stat), ") "),
    Fs = string:tokens(After, " "),
    Ut = lists:nth(12, Fs), St = lists:nth(13, Fs),
    IoL = [string:split(L, ": ") || L <- string:tokens(binary_to_list(Io), "\n")],
    Get = fun(K) -> [_, V] = lists:keyfind(K, 1, [{A, A2} || [A, A2] <- IoL] ++ []) , V end,
    io:format(F, "S\t~p\t~p\t~s\t~s\t~s\t~s\t~s~n", [T, Total, Ut, St,
        element(2, lists:keyfind("syscr", 1, [list_to_tuple(X) || X <- IoL])),
        element(2, lists:keyfind("syscw", 1, [list_to_tuple(X) || X <- IoL])),
        element(2, lists:keyfind("write_bytes", 1, [list_to_tuple(X) || X <- IoL]))]),
    _ = Get,
    [io:format(F, "C\t~p\t~s~n", [R, lists:flatten(io_lib:format("~0p", [K]))]) || {K, R} <- Classes],
    case get(qi) of undefined -> put(qi, 0); _ -> ok end,
    put(qi, get(qi) + 1),
    case get(qi) rem 3 of 0 -> io:format(F, "Q\t~0p~n", [rpc:call(Node, bxs, qinfo, [])]); _ -> ok end,
    case filelib:is_file(Stop) of
        true -> file:close(F), ok;
        false -> timer:sleep(Ms), loop(Node, BeamPid, F, Ms, Stop)
    end.
