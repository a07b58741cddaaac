from services.generation.main import main

main()
