-module(bxs).
-export([snap/0, qinfo/0]).
%% One snapshot of the node: total reductions, and reductions per process class
%% (queue processes by queue name, connection processes by connection name + module).
snap() ->
    {Total, _} = erlang:statistics(reductions),
    QNames = maps:from_list(
               [{amqqueue:get_pid(Q), element(4, amqqueue:get_name(Q))} || Q <- rabbit_amqqueue:list()]),
    Conn = conn_names(),
    Classes = lists:foldl(
                fun(P, Acc) ->
                        case erlang:process_info(P, [reductions, dictionary, group_leader]) of
                            undefined -> Acc;
                            [{reductions, R}, {dictionary, D}, _] ->
                                K = class(P, D, QNames, Conn),
                                maps:update_with(K, fun(V) -> V + R end, R, Acc)
                        end
                end, #{}, erlang:processes()),
    {erlang:system_time(millisecond), Total, maps:to_list(Classes)}.

class(P, D, QNames, Conn) ->
    case maps:find(P, QNames) of
        {ok, N} -> {queue, N};
        error ->
            M = case proplists:get_value('$initial_call', D) of
                    {Mod, _, _} -> Mod;
                    _ -> case erlang:process_info(P, initial_call) of
                             {initial_call, {Mod, _, _}} -> Mod;
                             _ -> other
                         end
                end,
            case proplists:get_value(process_name, D) of
                undefined ->
                    {mod, M};
                Name -> {named, M, tag(Name, Conn)}
            end
    end.

tag({rabbit_channel, {ConnName, Ch}}, C) -> {cname(ConnName, C), Ch};
tag({rabbit_reader, ConnName}, C) -> cname(ConnName, C);
tag({rabbit_writer, {ConnName, Ch}}, C) -> {cname(ConnName, C), Ch};
tag({rabbit_writer, ConnName}, C) -> cname(ConnName, C);
tag({Mod, {ConnName, Ch}}, C) -> {Mod, cname(ConnName, C), Ch};
tag(Other, _) -> Other.

cname(N, C) ->
    case lists:keyfind(N, 1, C) of
        {_, U} -> U;
        false -> N
    end.

conn_names() ->
    lists:flatmap(
      fun(Pid) ->
              try
                  [{name, N}, {user_provided_name, U}] = rabbit_reader:info(Pid, [name, user_provided_name]),
                  [{N, U}]
              catch _:_ -> []
              end
      end, [P || P <- rabbit_networking:connections_local()]).

qinfo() ->
    [begin
         P = amqqueue:get_pid(Q),
         PI = erlang:process_info(P, [message_queue_len, total_heap_size, garbage_collection, reductions]),
         BQ = try rabbit_amqqueue:info(Q, [backing_queue_status, messages_ram, messages_persistent, memory])
              catch _:_ -> [] end,
         {element(4, amqqueue:get_name(Q)), PI, BQ}
     end || Q <- rabbit_amqqueue:list()].
