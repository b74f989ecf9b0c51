-- AlterTable
ALTER TABLE "SourceSet" ADD COLUMN     "hasGraphs" BOOLEAN NOT NULL DEFAULT false;
