using Haven.Cli;

return await HavenCli.RunAsync(args, CliEnvironment.FromProcess());
